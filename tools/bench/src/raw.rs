//! The physical limit: plain rdkafka clients with nothing of the kit around them.
//!
//! Both are blocking (call them from `block_in_place`): a `ThreadedProducer` fed as fast as
//! librdkafka's queue takes records, and a `BaseConsumer` polled in a tight loop. Each does
//! the same work as the kit path it is compared with: the producer sends stored bytes, or
//! encodes each event with `spine_events::encode` first; the consumer touches each value, or
//! decodes it with `spine_events::decode`.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use spine_events::Event as _;
use spine_events::orders::OrderPlaced;
use spine_kit::kafka::OutgoingRecord;

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

    /// Sends every stored record (key, value and headers as the outbox holds them) to `topic`
    /// and waits for the last acknowledgement: the "pre-encoded bytes" work. Fails if any
    /// record was not acknowledged within `timeout`.
    pub fn produce_stored(
        &self,
        topic: &str,
        records: &[OutgoingRecord],
        timeout: Duration,
    ) -> anyhow::Result<Measurement> {
        self.produce_with(topic, records.len(), timeout, |i| {
            let record = &records[i];
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.iter().count()),
                |acc, (key, value)| {
                    acc.insert(Header {
                        key,
                        value: Some(value),
                    })
                },
            );
            Ok((
                Cow::Borrowed(record.key.as_deref().unwrap_or_default()),
                Cow::Borrowed(record.payload.as_slice()),
                headers,
            ))
        })
    }

    /// Encodes every event with `spine_events::encode` and sends it keyed by its order id, with
    /// an `event-id` header of its own and the `fixed` headers (type, version, content type,
    /// trace context: the same names and sizes as the kit's), then waits for the last
    /// acknowledgement: the "encode per event" work.
    pub fn produce_encoding(
        &self,
        topic: &str,
        events: &[OrderPlaced],
        fixed: &[(String, Vec<u8>)],
        timeout: Duration,
    ) -> anyhow::Result<Measurement> {
        self.produce_with(topic, events.len(), timeout, |i| {
            let event = &events[i];
            let payload = spine_events::encode(event).context("raw encode")?;
            let event_id = event.event_id().to_string();
            let headers = fixed.iter().fold(
                OwnedHeaders::new_with_capacity(fixed.len() + 1).insert(Header {
                    key: spine_kit::kafka::headers::EVENT_ID,
                    value: Some(event_id.as_bytes()),
                }),
                |acc, (key, value)| {
                    acc.insert(Header {
                        key,
                        value: Some(value),
                    })
                },
            );
            Ok((
                Cow::Owned(event.aggregate_id().to_string().into_bytes()),
                Cow::Owned(payload),
                headers,
            ))
        })
    }

    /// Sends `count` records made by `record(i)` (key, value, headers), as fast as librdkafka's
    /// queue takes them, and measures from the first `record` call to the last acknowledgement.
    fn produce_with<'a>(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
        mut record: impl FnMut(usize) -> anyhow::Result<(Cow<'a, [u8]>, Cow<'a, [u8]>, OwnedHeaders)>,
    ) -> anyhow::Result<Measurement> {
        let acks = self.producer.context();
        let before = acks.delivered.load(Ordering::Relaxed);
        let started = Instant::now();
        for i in 0..count {
            let (key, payload, headers) = record(i)?;
            let mut record = BaseRecord::to(topic)
                .key(key.as_ref())
                .payload(payload.as_ref())
                .headers(headers);
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
        while acks.delivered.load(Ordering::Relaxed) - before < count as u64 {
            if Instant::now() > deadline {
                bail!("raw produce: delivery reports missing after flush");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Measurement {
            records: count as u64,
            elapsed,
        })
    }
}

/// Reads `records` records of `topic` as a fresh consumer group from the earliest offset and
/// measures from the first record received to the last. With `decode`, each value is decoded
/// as `OrderPlaced` with `spine_events::decode` (the work of the kit's decoding handler);
/// without, only its length is read (the work of the kit's no-op handler).
///
/// The group join (seconds on tansu) is outside the interval, as it is for the kit's runner.
pub fn consume(
    bootstrap_servers: &str,
    topic: &str,
    group: &str,
    records: u64,
    decode: bool,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        // tansu's first JoinGroup waits out max.poll.interval.ms (see STACK-NOTES.md).
        .set("max.poll.interval.ms", "10000")
        .set("session.timeout.ms", "6000")
        // The kit's prefetch setting, so that both consumers refill their queue alike.
        .set(
            "fetch.queue.backoff.ms",
            spine_kit::kafka::config::FETCH_QUEUE_BACKOFF_MS,
        )
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
                if decode {
                    let order =
                        spine_events::decode::<OrderPlaced>(message.payload().unwrap_or_default())
                            .context("raw decode")?;
                    std::hint::black_box(&order);
                } else {
                    bytes += message.payload_len();
                }
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
