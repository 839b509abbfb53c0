//! Scanning a DLQ: an assigned consumer (no group, nothing committed) reads every partition
//! from its low watermark up to the high watermark taken at the start, then stops. Records
//! dead-lettered while the scan runs are left for the next one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use spine_kit::kafka::Headers;
use spine_kit::kafka::config::base_config;
use spine_kit::settings::KafkaSettings;

use crate::error::DlqError;
use crate::record::{
    DlqRecord, PARKED_FROM_OFFSET, PARKED_FROM_PARTITION, Position, now_millis, parked_topic,
};

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole scan may take before it is reported as a failure.
const SCAN_TIMEOUT: Duration = Duration::from_secs(120);

/// Every record of `topic`, in (partition, offset) order.
///
/// Blocking (librdkafka's consumer is polled here); call it from `spawn_blocking` in async code
/// that must stay responsive. Fails with [`DlqError::UnknownTopic`] when the topic does not
/// exist.
pub fn scan(settings: &KafkaSettings, topic: &str) -> Result<Vec<DlqRecord>, DlqError> {
    // librdkafka wants a group id even for an assigned consumer; this one never joins or
    // commits, so a throwaway name leaves no trace on the cluster.
    let reader_group = format!("spine-dlq-reader-{}-{}", std::process::id(), now_millis());
    let consumer: BaseConsumer = base_config(settings, "spine-dlq")
        .set("group.id", &reader_group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .create()?;
    let partitions =
        partitions(&consumer, topic)?.ok_or_else(|| DlqError::UnknownTopic(topic.to_owned()))?;

    // The end of each partition, fixed now: the scan stops there.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    let mut list = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
        if high > low {
            remaining.insert(partition, high);
            list.add_partition_offset(topic, partition, Offset::Offset(low))?;
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&list)?;
    let deadline = Instant::now() + SCAN_TIMEOUT;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            return Err(DlqError::ReadTimeout(topic.to_owned()));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            // Nothing arrived: the partitions may end in records a reader never sees (control
            // records, compacted gaps), so also trust the consumer's position.
            finish_by_position(&consumer, topic, &mut remaining);
            continue;
        };
        let message = result?;
        let partition = message.partition();
        let Some(&high) = remaining.get(&partition) else {
            continue;
        };
        if message.offset() < high {
            records.push(DlqRecord {
                position: Position {
                    partition,
                    offset: message.offset(),
                },
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: message
                    .headers()
                    .map(Headers::from_borrowed)
                    .unwrap_or_default(),
                timestamp_ms: message.timestamp().to_millis(),
            });
        }
        if message.offset() + 1 >= high {
            remaining.remove(&partition);
        }
    }
    records.sort_by_key(|r| r.position);
    Ok(records)
}

/// The DLQ positions already moved to `<dlq>.parked` (empty when nothing was ever parked).
pub fn parked_positions(
    settings: &KafkaSettings,
    dlq_topic: &str,
) -> Result<HashSet<Position>, DlqError> {
    let records = match scan(settings, &parked_topic(dlq_topic)) {
        Ok(records) => records,
        Err(DlqError::UnknownTopic(_)) => return Ok(HashSet::new()),
        Err(err) => return Err(err),
    };
    Ok(records
        .iter()
        .filter_map(|r| {
            let partition = r.headers.get_str(PARKED_FROM_PARTITION)?.parse().ok()?;
            let offset = r.headers.get_str(PARKED_FROM_OFFSET)?.parse().ok()?;
            Some(Position { partition, offset })
        })
        .collect())
}

/// The partition ids of `topic`, or `None` when the cluster does not know it.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Option<Vec<i32>>, DlqError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error() {
        None if !found.partitions().is_empty() => {}
        None => return Ok(None),
        Some(code) => {
            let code = RDKafkaErrorCode::from(code);
            if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                return Ok(None);
            }
            return Err(KafkaError::MetadataFetch(code).into());
        }
    }
    Ok(Some(found.partitions().iter().map(|p| p.id()).collect()))
}

fn finish_by_position(consumer: &BaseConsumer, topic: &str, remaining: &mut HashMap<i32, i64>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    remaining.retain(|&partition, &mut high| {
        match positions
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(next)) => next < high,
            _ => true,
        }
    });
}
