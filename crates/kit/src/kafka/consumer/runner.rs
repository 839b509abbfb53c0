//! The consumer runner: one dispatcher loop that polls, hands records to per-key lanes, runs
//! handlers concurrently, and stores offsets only behind completed effects.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::context::{RunnerContext, commit_sync};
use super::dlq::{DeadLetterReason, dead_letter};
use super::handler::{Handler, HandlerError, Record};
use super::retry::backoff;
use super::tracker::{Partition, Ticket, Tracker};
use crate::kafka::config::consumer_config;
use crate::kafka::headers::Headers;
use crate::kafka::producer::{PublishError, Publisher};
use crate::settings::{ConsumerSettings, KafkaSettings, RetrySettings};

/// Why the runner stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The consumer could not be created or subscribed.
    #[error("kafka consumer setup failed: {0}")]
    Setup(#[from] KafkaError),
    /// A handler returned [`HandlerError::Fatal`]; its record was not committed.
    #[error("handler failed fatally at {topic}/{partition}@{offset}: {source:#}")]
    Fatal {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record, which will be redelivered.
        offset: i64,
        /// The handler's error.
        source: anyhow::Error,
    },
    /// A record could not be dead-lettered, so it could not be let go either.
    #[error("dead-letter publish failed for {topic}/{partition}@{offset}: {source}")]
    DeadLetter {
        /// Topic of the record.
        topic: String,
        /// Partition of the record.
        partition: i32,
        /// Offset of the record, which will be redelivered.
        offset: i64,
        /// The producer's error (boxed: it is large and rare).
        source: Box<PublishError>,
    },
}

/// How a record's processing ended.
enum Outcome {
    Handled,
    DeadLettered,
    /// Shutdown interrupted a retry; the offset is not stored, so the record is redelivered.
    Abandoned,
    Failed(RunnerError),
}

struct Done {
    ticket: Ticket,
    outcome: Outcome,
}

/// Runs a [`Handler`] over topics as one consumer group member.
///
/// **Guarantee: at-least-once, plus per-key order.** An offset is stored only after the
/// handler's effect succeeded or the record was dead-lettered, and never past a record still
/// held; stored offsets are committed every `commit_interval`, and synchronously on revoke and
/// on shutdown. A crash therefore redelivers, never loses: make effects idempotent (see
/// [`crate::inbox`]). Records of one key run one at a time, in offset order, retries
/// included; different keys and partitions run concurrently, up to `max_in_flight` records,
/// beyond which the runner pauses its partitions (and keeps polling, so it stays in the group).
pub struct ConsumerRunner<H> {
    handler: Arc<H>,
    settings: KafkaSettings,
    group: Arc<str>,
    topics: Vec<String>,
    dlq_topic: Arc<str>,
    dlq: Publisher,
    client_id: String,
}

impl<H: Handler> ConsumerRunner<H> {
    /// A runner for `group` over `topics`. Creates the DLQ producer; the consumer itself is
    /// created by [`ConsumerRunner::run`].
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topics: &[&str],
        handler: H,
    ) -> Result<Self, RunnerError> {
        Ok(Self {
            handler: Arc::new(handler),
            settings: settings.clone(),
            group: Arc::from(group),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            dlq_topic: Arc::from(dlq_topic(&settings.consumer, group)),
            dlq: Publisher::new(settings, &format!("{group}-dlq"))?,
            client_id: group.to_owned(),
        })
    }

    /// The dead-letter topic of this group: provision it with the service's topics.
    pub fn dlq_topic(&self) -> &str {
        &self.dlq_topic
    }

    /// Consumes until `shutdown` is cancelled or a handler fails fatally. On the way out it
    /// waits up to `shutdown_timeout` for running handlers, commits synchronously and leaves
    /// the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let (context, revoked) = RunnerContext::new(&self.group);
        let consumer: StreamConsumer<RunnerContext> =
            consumer_config(&self.settings, &self.client_id, &self.group)
                .create_with_context(context)?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        // Every outcome series exists from the start at 0, so that `increase()` in an alert
        // sees the first dead letter too (a counter born at 1 shows no increase).
        for topic in &topics {
            for outcome in ["handled", "dead_lettered"] {
                metrics::counter!("spine_consumer_records_total",
                    "group" => self.group.to_string(), "topic" => (*topic).to_owned(), "outcome" => outcome)
                .increment(0);
            }
        }
        tracing::info!(group = %self.group, topics = ?self.topics, "consumer started");

        let mut dispatcher = Dispatcher {
            runner: &self,
            consumer: &consumer,
            revoked,
            tracker: Tracker::new(),
            running: 0,
            paused: false,
            stop: shutdown.child_token(),
            failure: None,
            done: mpsc::unbounded_channel(),
        };
        dispatcher.dispatch().await;
        dispatcher.drain().await;
        commit_sync(&consumer, "shutdown");
        consumer.unsubscribe();
        tracing::info!(group = %self.group, "consumer stopped");
        dispatcher.failure.map_or(Ok(()), Err)
    }
}

/// The name of a group's dead-letter topic.
pub fn dlq_topic(settings: &ConsumerSettings, group: &str) -> String {
    format!("{group}{}", settings.dlq_suffix)
}

struct Dispatcher<'a, H> {
    runner: &'a ConsumerRunner<H>,
    consumer: &'a StreamConsumer<RunnerContext>,
    revoked: Arc<Mutex<Vec<Partition>>>,
    tracker: Tracker,
    running: usize,
    paused: bool,
    /// Cancelled on shutdown or on the first failure: stops polling and interrupts retries.
    stop: CancellationToken,
    failure: Option<RunnerError>,
    done: (mpsc::UnboundedSender<Done>, mpsc::UnboundedReceiver<Done>),
}

impl<H: Handler> Dispatcher<'_, H> {
    /// Polls and starts records until shutdown or a failure.
    ///
    /// Backpressure: at `max_in_flight` held records the dispatcher stops taking records and
    /// only waits for handlers to finish; librdkafka keeps what it has prefetched, so the next
    /// records are ready the moment a slot frees. Only when the bound holds for half of
    /// `max_poll_interval` does it pause its partitions and go on polling, so that it stays in
    /// the group; it resumes at half the bound. (Pausing at once would make librdkafka drop and
    /// refetch its prefetched batch every time a burst filled the bound.)
    async fn dispatch(&mut self) {
        let max_in_flight = self.runner.settings.consumer.max_in_flight.max(1);
        let patience = self.runner.settings.consumer.max_poll_interval / 2;
        let in_flight =
            metrics::gauge!("spine_consumer_in_flight", "group" => self.runner.group.to_string());
        let mut full_since: Option<tokio::time::Instant> = None;
        // Copied out so that a received message borrows the consumer, not `self`.
        let consumer = self.consumer;
        loop {
            let full = !self.paused && self.tracker.held() >= max_in_flight;
            let now = tokio::time::Instant::now();
            let pause_at = if full {
                *full_since.get_or_insert(now) + patience
            } else {
                full_since = None;
                now + patience
            };
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                Some(done) = self.done.1.recv() => self.on_done(done),
                () = tokio::time::sleep_until(pause_at), if full => self.set_paused(true),
                message = consumer.recv(), if !full => {
                    self.apply_revocations();
                    match message {
                        Ok(message) => self.on_message(&message),
                        Err(err) => {
                            tracing::warn!(group = %self.runner.group, error = %err, "consumer error");
                        }
                    }
                }
            }
            self.apply_revocations();
            let held = self.tracker.held();
            if self.paused && held <= max_in_flight / 2 {
                self.set_paused(false);
            }
            in_flight.set(held as f64);
        }
    }

    /// Waits for running handlers (bounded by `shutdown_timeout`), storing what completes.
    async fn drain(&mut self) {
        let deadline = tokio::time::sleep(self.runner.settings.consumer.shutdown_timeout);
        tokio::pin!(deadline);
        while self.running > 0 {
            tokio::select! {
                Some(done) = self.done.1.recv() => self.on_done(done),
                () = &mut deadline => {
                    tracing::warn!(group = %self.runner.group, running = self.running,
                        "shutdown timeout: abandoning running handlers; their records will be redelivered");
                    break;
                }
            }
        }
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) {
        let record = Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(Headers::from_borrowed)
                .unwrap_or_default(),
            timestamp_ms: message.timestamp().to_millis(),
            attempt: 1,
        };
        if let Some((ticket, record)) = self.tracker.accept(record) {
            self.start(ticket, record);
        }
    }

    fn on_done(&mut self, Done { ticket, outcome }: Done) {
        self.running -= 1;
        match outcome {
            Outcome::Handled | Outcome::DeadLettered => {
                let (next, store) = self.tracker.complete(&ticket);
                if let Some(offset) = store {
                    self.store(&ticket.partition, offset);
                }
                if let Some((ticket, record)) = next
                    && !self.stop.is_cancelled()
                {
                    self.start(ticket, record);
                }
            }
            Outcome::Abandoned => {}
            Outcome::Failed(err) => {
                tracing::error!(group = %self.runner.group, error = %err, "stopping consumer");
                self.failure.get_or_insert(err);
                self.stop.cancel();
            }
        }
    }

    fn start(&mut self, ticket: Ticket, record: Record) {
        self.running += 1;
        let span = consumer_span(&self.runner.group, &record);
        let task = Process {
            handler: self.runner.handler.clone(),
            retry: self.runner.settings.consumer.retry.clone(),
            group: self.runner.group.clone(),
            dlq_topic: self.runner.dlq_topic.clone(),
            dlq: self.runner.dlq.clone(),
            stop: self.stop.clone(),
        };
        let done = self.done.0.clone();
        tokio::spawn(
            async move {
                let outcome = task.run(record).await;
                // The receiver lives as long as the dispatcher, which outlives every task it
                // waits for; after a shutdown timeout nobody listens, which is fine.
                let _ = done.send(Done { ticket, outcome });
            }
            .instrument(span),
        );
    }

    fn store(&self, partition: &Partition, next_offset: i64) {
        let mut list = TopicPartitionList::new();
        if let Err(err) = list.add_partition_offset(
            &partition.topic,
            partition.partition,
            Offset::Offset(next_offset),
        ) {
            tracing::warn!(error = %err, "cannot build offset list");
            return;
        }
        // Fails harmlessly for a partition revoked meanwhile: its next owner redelivers.
        if let Err(err) = self.consumer.store_offsets(&list) {
            tracing::debug!(error = %err, topic = %partition.topic, partition = partition.partition,
                "offset not stored (partition revoked?)");
        }
    }

    fn apply_revocations(&mut self) {
        let revoked = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()));
        for partition in &revoked {
            self.tracker.revoke(partition);
        }
        if !revoked.is_empty() && self.paused {
            // The new assignment starts unpaused; re-apply the pause to it.
            self.paused = false;
        }
    }

    fn set_paused(&mut self, paused: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = paused;
                tracing::debug!(group = %self.runner.group, paused, held = self.tracker.held(), "backpressure");
            }
            Err(err) => tracing::warn!(error = %err, paused, "cannot pause/resume partitions"),
        }
    }
}

/// One record's life: handle, retry with backoff, dead-letter.
struct Process<H> {
    handler: Arc<H>,
    retry: RetrySettings,
    group: Arc<str>,
    dlq_topic: Arc<str>,
    dlq: Publisher,
    stop: CancellationToken,
}

impl<H: Handler> Process<H> {
    async fn run(self, mut record: Record) -> Outcome {
        let labels = [
            ("group", self.group.to_string()),
            ("topic", record.topic.clone()),
        ];
        let max_attempts = self.retry.max_attempts.max(1);
        loop {
            let started = Instant::now();
            let result = self.handler.handle(&record).await;
            metrics::histogram!("spine_consumer_handler_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            if let Err(err) = &result {
                metrics::counter!("spine_consumer_errors_total",
                    "group" => self.group.to_string(), "topic" => record.topic.clone(), "class" => err.kind())
                .increment(1);
            }
            let (reason, err) = match result {
                Ok(()) => {
                    count_outcome(&self.group, &record.topic, "handled");
                    return Outcome::Handled;
                }
                Err(HandlerError::Retryable(err)) if record.attempt < max_attempts => {
                    metrics::counter!("spine_consumer_retries_total", &labels).increment(1);
                    let delay = backoff(&self.retry, record.attempt);
                    tracing::warn!(
                        attempt = record.attempt,
                        ?delay,
                        error = format!("{err:#}"),
                        "retrying record"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Outcome::Abandoned,
                    }
                    record.attempt += 1;
                    continue;
                }
                Err(HandlerError::Unavailable(err)) => {
                    // TODO(stall): placeholder until the stall gate lands.
                    let delay = backoff(&self.retry, record.attempt.min(16));
                    tracing::warn!(
                        attempt = record.attempt,
                        ?delay,
                        error = format!("{err:#}"),
                        "dependency unavailable"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Outcome::Abandoned,
                    }
                    record.attempt += 1;
                    continue;
                }
                Err(HandlerError::Retryable(err)) => (DeadLetterReason::RetriesExhausted, err),
                Err(HandlerError::Poison(err)) => (DeadLetterReason::Poison, err),
                Err(HandlerError::Fatal(source)) => {
                    return Outcome::Failed(RunnerError::Fatal {
                        topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        source,
                    });
                }
            };
            return self.dead_letter(&record, reason, &err).await;
        }
    }

    async fn dead_letter(
        &self,
        record: &Record,
        reason: DeadLetterReason,
        err: &anyhow::Error,
    ) -> Outcome {
        let error = format!("{err:#}");
        tracing::error!(
            reason = reason.as_str(),
            attempts = record.attempt,
            error,
            "dead-lettering record"
        );
        let letter = dead_letter(&self.dlq_topic, &self.group, record, reason, &error);
        // The producer already retries inside `delivery.timeout`; a failure here means the
        // broker is unreachable for that long, so stop rather than drop the record.
        match self.dlq.send(&letter).await {
            Ok(_) => {
                count_outcome(&self.group, &record.topic, "dead_lettered");
                Outcome::DeadLettered
            }
            Err(source) => Outcome::Failed(RunnerError::DeadLetter {
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
                source: Box::new(source),
            }),
        }
    }
}

fn count_outcome(group: &str, topic: &str, outcome: &'static str) {
    metrics::counter!("spine_consumer_records_total",
        "group" => group.to_owned(), "topic" => topic.to_owned(), "outcome" => outcome)
    .increment(1);
}

/// A consumer span per the OpenTelemetry messaging conventions, child of the producer's
/// context carried in the headers.
fn consumer_span(group: &str, record: &Record) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = format!("process {}", record.topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %record.topic,
        messaging.destination.partition.id = record.partition,
        messaging.kafka.offset = record.offset,
        messaging.kafka.message.key = record.key_str(),
        messaging.consumer.group.name = group,
        messaging.message.id = record.event_id(),
    );
    let _ = span.set_parent(record.headers.extract_context());
    span
}
