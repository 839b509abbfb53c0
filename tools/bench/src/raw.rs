//! The physical limit: plain rdkafka clients with nothing of the kit around them.
//!
//! Both are blocking (call them from `spawn_blocking`): a `ThreadedProducer` fed as fast as
//! librdkafka's queue takes records, and a `BaseConsumer` polled in a tight loop.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;

use crate::report::Measurement;

/// Counts delivery reports; runs on the producer's poll thread.
#[derive(Default)]
pub struct Acks {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

/// A plain producer, kept across measurements so that only the first (the warm-up) pays for
/// connecting and for the idempotent producer id.
pub struct RawProducer {
    producer: ThreadedProducer<Acks>,
}

impl RawProducer {
    /// A producer with `config`: pass the kit's own `producer_config` so both paths run with
    /// the same reliability settings (acks=all, idempotence, linger, delivery timeout).
    pub fn new(config: &ClientConfig) -> anyhow::Result<Self> {
        Ok(Self {
            producer: config
                .create_with_context(Acks::default())
                .context("creating the raw producer")?,
        })
    }

    /// Sends one record per key to `topic`, all with the same value and headers, and waits for
    /// the last acknowledgement. Fails if any record was not acknowledged within `timeout`.
    pub fn produce(
        &self,
        topic: &str,
        keys: &[Vec<u8>],
        payload: &[u8],
        headers: &OwnedHeaders,
        timeout: Duration,
    ) -> anyhow::Result<Measurement> {
        let acks = self.producer.context();
        let before = acks.delivered.load(Ordering::Relaxed);
        let started = Instant::now();
        for key in keys {
            let mut record = BaseRecord::to(topic)
                .key(key.as_slice())
                .payload(payload)
                .headers(headers.clone());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The poll thread drains delivery reports; give it a moment.
                        record = back;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err((err, _)) => return Err(err).context("raw produce"),
                }
            }
        }
        self.producer
            .flush(Timeout::After(timeout))
            .context("raw produce: not every record acknowledged in time")?;
        let elapsed = started.elapsed();
        if acks.failed.load(Ordering::Relaxed) > 0 {
            let first = acks.first_error.lock().unwrap_or_else(|e| e.into_inner());
            bail!("raw produce: deliveries failed, first: {first:?}");
        }
        // `flush` returns once the queue is empty; the last report may still be on its way to
        // the callback.
        let deadline = Instant::now() + Duration::from_secs(5);
        while acks.delivered.load(Ordering::Relaxed) - before < keys.len() as u64 {
            if Instant::now() > deadline {
                bail!("raw produce: delivery reports missing after flush");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Measurement {
            records: keys.len() as u64,
            elapsed,
        })
    }
}

/// Reads `records` records of `topic` as a fresh consumer group from the earliest offset,
/// touching each value, and measures from the first record received to the last.
///
/// The group join (seconds on tansu) is outside the interval, as it is for the kit's runner.
pub fn consume(
    bootstrap_servers: &str,
    topic: &str,
    group: &str,
    records: u64,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // tansu's first JoinGroup waits out max.poll.interval.ms (see STACK-NOTES.md).
        .set("max.poll.interval.ms", "10000")
        .set("session.timeout.ms", "6000")
        .set("log_level", "4")
        .create()
        .context("creating the raw consumer")?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut count = 0u64;
    let mut bytes = 0usize;
    let mut first = None;
    while count < records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                bytes += message.payload_len();
                count += 1;
                if first.is_none() {
                    first = Some(Instant::now());
                }
            }
            Some(Err(err)) => tracing::warn!(error = %err, "raw consumer error"),
            None if Instant::now() > deadline => {
                bail!("raw consume: {count} of {records} records in {timeout:?}")
            }
            None => {}
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |first| first.elapsed());
    std::hint::black_box(bytes);
    consumer.unsubscribe();
    Ok(Measurement {
        // The interval starts at the first record, so it covers the others.
        records: records - 1,
        elapsed,
    })
}
