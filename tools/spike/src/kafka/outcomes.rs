//! The tool's own reader of `orders.events` (OrderConfirmed, OrderRejected) and
//! `email.events` (EmailSent).
//!
//! It joins no group: it is *assigned* every partition at the offset the high watermark had
//! before the load started, so it sees every fact about the run's orders and nothing older,
//! and it never stalls on a group join (which takes seconds on tansu). Its unique group id is
//! never committed to, so it leaves no trace on the broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use spine_events::Event;
use spine_events::email::EmailSent;
use spine_events::orders::{OrderConfirmed, OrderRejected};
use spine_kit::settings::KafkaSettings;
use uuid::Uuid;

use super::{KafkaSetupError, client_config, client_error, partitions};
use crate::record::{Fact, Tracker};

/// The topics the reader follows.
pub fn outcome_topics() -> [&'static str; 2] {
    [spine_events::orders::TOPIC, spine_events::email::TOPIC]
}

/// Which order a record is about and which followed fact it is, or `None` for any other
/// record (an `OrderPlaced`, garbage, an unknown schema).
///
/// The event type comes from the value's single-object header; the order id from the key
/// (every spine record is keyed by order id), or from the decoded value when the key is not
/// a UUID.
pub fn classify(key: Option<&[u8]>, payload: &[u8]) -> Option<(Uuid, Fact)> {
    let entry = spine_events::peek(payload).ok()?;
    let fact = match entry.name() {
        OrderConfirmed::NAME => Fact::Confirmed,
        OrderRejected::NAME => Fact::Rejected,
        EmailSent::NAME => Fact::EmailSent,
        _ => return None,
    };
    let from_key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| Uuid::parse_str(k).ok());
    let id = match from_key {
        Some(id) => id,
        None => match fact {
            Fact::Confirmed => spine_events::decode::<OrderConfirmed>(payload)
                .ok()?
                .aggregate_id(),
            Fact::Rejected => spine_events::decode::<OrderRejected>(payload)
                .ok()?
                .aggregate_id(),
            Fact::EmailSent => spine_events::decode::<EmailSent>(payload)
                .ok()?
                .aggregate_id(),
        },
    };
    Some((id, fact))
}

/// A running reader; [`OutcomeReader::stop`] ends it.
pub struct OutcomeReader {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl OutcomeReader {
    /// Positions a consumer at the current end of every partition of the outcome topics and
    /// starts reading into `tracker`. Blocking: it waits (up to 15 s) for the topics to exist
    /// and asks for every partition's high watermark.
    pub fn start(
        settings: &KafkaSettings,
        tracker: Arc<Mutex<Tracker>>,
    ) -> Result<Self, KafkaSetupError> {
        let mut config = client_config(settings, "spine-spike");
        config
            .set(
                "group.id",
                format!("spine-spike-{}", Uuid::new_v4().simple()),
            )
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = config.create().map_err(client_error(settings))?;
        let mut assignment = TopicPartitionList::new();
        for topic in outcome_topics() {
            for partition in partitions(&consumer, settings, topic, Duration::from_secs(15))? {
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map_err(client_error(settings))?;
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(high))
                    .map_err(client_error(settings))?;
            }
        }
        consumer
            .assign(&assignment)
            .map_err(client_error(settings))?;

        let stop = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, read) = (stop.clone(), read.clone());
            std::thread::Builder::new()
                .name("spike-outcomes".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                            continue;
                        };
                        let at = Instant::now();
                        let payload = message.payload().unwrap_or_default();
                        if let Some((id, fact)) = classify(message.key(), payload) {
                            read.fetch_add(1, Ordering::Relaxed);
                            tracker
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .observed(id, fact, at);
                        }
                    }
                })
                .expect("a thread for the outcome reader")
        };
        Ok(Self {
            stop,
            read,
            thread: Some(thread),
        })
    }

    /// Facts read so far.
    pub fn facts_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Stops reading and waits for the thread (at most one poll, 100 ms).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for OutcomeReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use spine_events::orders::{LineItem, OrderPlaced};

    use super::*;

    fn placed() -> OrderPlaced {
        OrderPlaced::new(
            Uuid::now_v7(),
            "c-1",
            "ada@example.com",
            vec![LineItem::new("SKU-1", 1, 1250)],
            "EUR",
        )
    }

    #[test]
    fn outcome_and_email_facts_are_classified_by_their_schema() {
        let placed = placed();
        let id = placed.order_id;
        let key = id.to_string();
        let confirmed = spine_events::encode(&OrderConfirmed::of(&placed)).unwrap();
        let rejected = spine_events::encode(&OrderRejected::of(&placed, "out of stock")).unwrap();
        let email = spine_events::encode(&EmailSent::new(
            id,
            "ada@example.com",
            "order_confirmed",
            "m-1",
        ))
        .unwrap();
        assert_eq!(
            classify(Some(key.as_bytes()), &confirmed),
            Some((id, Fact::Confirmed))
        );
        assert_eq!(
            classify(Some(key.as_bytes()), &rejected),
            Some((id, Fact::Rejected))
        );
        assert_eq!(
            classify(Some(key.as_bytes()), &email),
            Some((id, Fact::EmailSent))
        );
    }

    #[test]
    fn the_order_id_comes_from_the_value_when_the_key_is_not_one() {
        let placed = placed();
        let confirmed = spine_events::encode(&OrderConfirmed::of(&placed)).unwrap();
        assert_eq!(
            classify(None, &confirmed),
            Some((placed.order_id, Fact::Confirmed))
        );
        assert_eq!(
            classify(Some(b"not-a-uuid"), &confirmed),
            Some((placed.order_id, Fact::Confirmed))
        );
    }

    #[test]
    fn other_records_are_ignored() {
        let placed = placed();
        let key = placed.order_id.to_string();
        let bytes = spine_events::encode(&placed).unwrap();
        assert_eq!(classify(Some(key.as_bytes()), &bytes), None);
        assert_eq!(classify(Some(key.as_bytes()), b"garbage"), None);
        assert_eq!(classify(None, &[]), None);
    }
}
