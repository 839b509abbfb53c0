//! Shared harness: settings for the test broker, a unique original topic and DLQ per test, and
//! DLQ records written by hand in the consumer runner's own format.

use std::time::Duration;

use spine_dlq::{Dlq, Filter};
use spine_kit::kafka::consumer::dlq::dead_letter;
use spine_kit::kafka::consumer::{DeadLetterReason, Record};
use spine_kit::kafka::{Headers, Publisher};
use spine_kit::settings::KafkaSettings;

pub use spine_kit::testing::{Received, eventually, init_test_log, read_settled, unique};

/// Settings for the test broker, with tansu-friendly group timeouts and fast retries.
pub fn settings() -> KafkaSettings {
    let mut settings = spine_kit::testing::kafka_settings();
    settings.topics.partitions = 3;
    let consumer = &mut settings.consumer;
    consumer.shutdown_timeout = Duration::from_secs(5);
    consumer.retry.max_backoff = Duration::from_millis(100);
    consumer.retry.max_attempts = KafkaSettings::default().consumer.retry.max_attempts;
    settings
}

/// A fresh original topic, group and DLQ, created on the broker.
pub struct Fixture {
    pub settings: KafkaSettings,
    pub topic: String,
    pub group: String,
    pub dlq: Dlq,
    pub publisher: Publisher,
}

impl Fixture {
    pub async fn new() -> Self {
        init_test_log();
        let settings = settings();
        let topic = unique("topic");
        let group = unique("group");
        let dlq_topic = spine_kit::kafka::consumer::dlq_topic(&settings.consumer, &group);
        spine_kit::testing::create_topics(&settings, &[&topic, &dlq_topic]).await;
        let publisher = Publisher::new(&settings, "test-producer").unwrap();
        Self {
            dlq: Dlq::with_settings(settings.clone(), dlq_topic),
            settings,
            topic,
            group,
            publisher,
        }
    }

    /// Writes a DLQ record as the runner would for a record of `topic` (the fixture's when
    /// `None`), with an `event-id` header and `extra` original headers.
    pub async fn dead_letter(
        &self,
        topic: Option<&str>,
        key: &str,
        payload: &[u8],
        event_id: &str,
        error: &str,
        extra: &[(&str, &str)],
    ) {
        let mut headers = Headers::new().with(spine_kit::kafka::headers::EVENT_ID, event_id);
        for (name, value) in extra {
            headers.insert(*name, *value);
        }
        let record = Record {
            topic: topic.unwrap_or(&self.topic).to_owned(),
            partition: 1,
            offset: 17,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(payload.to_vec()),
            headers,
            timestamp_ms: None,
            attempt: 1,
        };
        let letter = dead_letter(
            &self.dlq.topic,
            &self.group,
            &record,
            DeadLetterReason::Poison,
            error,
        );
        self.publisher
            .send(&letter)
            .await
            .expect("publish to the test broker");
    }

    /// Every unparked record of the DLQ matching `filter`.
    pub async fn select(&self, filter: &Filter) -> Vec<spine_dlq::DlqRecord> {
        self.dlq
            .select(filter, false)
            .await
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// What landed on `topic`, read for a while so strays show up too.
    pub fn read(&self, topic: &str, expected: usize) -> Vec<Received> {
        read_settled(&self.settings, topic, expected, Duration::from_secs(20))
    }
}
