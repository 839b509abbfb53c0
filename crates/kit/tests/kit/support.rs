//! Shared test harness: settings for the test broker, unique topics and groups, a runner in
//! the background, and plain consumers for reading what landed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use spine_kit::kafka::consumer::{ConsumerRunner, Handler, HandlerError, Record, RunnerError};
use spine_kit::kafka::{Headers, OutgoingRecord, Publisher};
use spine_kit::settings::KafkaSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use spine_kit::testing::{
    Received, eventually, init_test_log, read_settled, read_topic, unique,
};

pub const PARTITIONS: i32 = 3;

/// Settings for the test broker, with fast retries and tansu-friendly group timeouts.
pub fn settings() -> KafkaSettings {
    let mut settings = spine_kit::testing::kafka_settings();
    settings.topics.partitions = PARTITIONS;
    let consumer = &mut settings.consumer;
    consumer.shutdown_timeout = Duration::from_secs(5);
    consumer.retry.max_backoff = Duration::from_millis(100);
    consumer.retry.max_attempts = KafkaSettings::default().consumer.retry.max_attempts;
    settings
}

/// A fresh topic, a fresh group, and that group's DLQ topic, all created on the broker.
pub struct Fixture {
    pub settings: KafkaSettings,
    pub topic: String,
    pub group: String,
    pub dlq: String,
    pub publisher: Publisher,
}

impl Fixture {
    pub async fn new(settings: KafkaSettings) -> Self {
        init_test_log();
        let topic = unique("topic");
        let group = unique("group");
        let dlq = spine_kit::kafka::consumer::dlq_topic(&settings.consumer, &group);
        spine_kit::testing::create_topics(&settings, &[&topic, &dlq]).await;
        let publisher = Publisher::new(&settings, "test-producer").unwrap();
        Self {
            settings,
            topic,
            group,
            dlq,
            publisher,
        }
    }

    /// Publishes a record with the given key and payload and an `event-id` header.
    pub async fn send(&self, key: &str, payload: &[u8], event_id: &str) {
        self.publisher
            .send(&OutgoingRecord {
                topic: self.topic.clone(),
                key: Some(key.as_bytes().to_vec()),
                payload: payload.to_vec(),
                headers: Headers::new().with(spine_kit::kafka::headers::EVENT_ID, event_id),
            })
            .await
            .expect("publish to the test broker");
    }

    /// Starts a runner of `handler` for this fixture's topic and group.
    pub fn spawn<H: Handler>(&self, handler: H) -> Running {
        self.spawn_with(&self.settings, handler)
    }

    /// Starts a runner with other settings.
    pub fn spawn_with<H: Handler>(&self, settings: &KafkaSettings, handler: H) -> Running {
        let runner = ConsumerRunner::new(settings, &self.group, &[&self.topic], handler).unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(runner.run(token.clone()));
        Running { token, task }
    }

    /// Reads every record of `topic` until `count` arrived or `timeout` passed.
    pub fn read(&self, topic: &str, count: usize, timeout: Duration) -> Vec<Received> {
        read_topic(&self.settings, topic, count, timeout)
    }
}

/// A runner in the background.
pub struct Running {
    pub token: CancellationToken,
    pub task: JoinHandle<Result<(), RunnerError>>,
}

impl Running {
    /// Graceful shutdown; returns the runner's result.
    pub async fn stop(self) -> Result<(), RunnerError> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("runner stops within 30 s")
            .expect("runner task panicked")
    }
}

/// A test handler: `f` gets a clone of `state` and the record.
pub struct StateHandler<S, F> {
    state: S,
    f: F,
}

/// Builds a [`StateHandler`].
pub fn handler<S, F, Fut>(state: S, f: F) -> StateHandler<S, F>
where
    F: Fn(S, Record) -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    StateHandler { state, f }
}

impl<S, F, Fut> Handler for StateHandler<S, F>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Record) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, record: &Record) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.f)(self.state.clone(), record.clone())
    }
}

/// A handler that records each payload it completes.
pub fn recording(seen: &Log<Vec<u8>>) -> impl Handler {
    handler(seen.clone(), |seen, r: Record| async move {
        seen.lock().unwrap().push(r.payload.unwrap_or_default());
        Ok(())
    })
}

/// A shared log of what handlers saw.
pub type Log<T> = Arc<std::sync::Mutex<Vec<T>>>;

pub fn log<T>() -> Log<T> {
    Arc::new(std::sync::Mutex::new(Vec::new()))
}
