//! The replay position: what `replay` already replayed, kept by the cluster as the committed
//! offsets of a consumer group of the tool's own, `spine-dlq.<dlq-topic>.replay` (see
//! [`replay_group`]). Nothing else ever consumes with that group; it is a bookmark per DLQ
//! partition meaning "every record below this offset has been dealt with by a replay".
//!
//! **How it moves** ([`advance`]). After a replay, each partition's position moves forward
//! over the records, in offset order from the old position, that are now dealt with:
//! - records replayed by this run;
//! - records already parked (the tool never replays them);
//! - on an **unfiltered** replay only (no `--topic`, `--error`, `--key`, `--since`, `--until`
//!   or positions): park candidates it skipped and records it cannot replay. They are `park`'s
//!   business (which ignores the position) or nobody's; an unfiltered rerun must replay 0.
//!
//! It stops at the first record that is not dealt with, and never moves back.
//!
//! **Filtered replays** therefore never hide a record they left out: a later unfiltered replay
//! still replays it. The price: a record a filtered replay replayed *after* one it left out
//! stays above the position, and a rerun with the same filter replays it again (its effect is
//! still applied once: the consumers' inboxes deduplicate by event id). The command says how
//! many such records there are. A single offset per partition can't remember a sparse set;
//! Kafka's commit metadata could, but tansu does not store it.
//!
//! A dry run moves nothing. `--again` replays records below the position too (the position
//! still never moves back).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use spine_kit::kafka::config::base_config;
use spine_kit::settings::KafkaSettings;

use crate::error::DlqError;
use crate::record::{DlqRecord, Position};

/// How long reading or committing the position may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The replay position of one DLQ: per partition, the first offset not yet dealt with.
/// A partition without an entry starts at 0.
pub type ReplayPosition = BTreeMap<i32, i64>;

/// The consumer group whose committed offsets are `dlq_topic`'s replay position.
pub fn replay_group(dlq_topic: &str) -> String {
    format!("spine-dlq.{dlq_topic}.replay")
}

/// Whether `position` counts as already replayed.
pub fn is_replayed(replayed: &ReplayPosition, position: Position) -> bool {
    replayed
        .get(&position.partition)
        .is_some_and(|&next| position.offset < next)
}

/// The new position after a replay. `records` is the whole DLQ scan in (partition, offset)
/// order; `done` says which records this run dealt with (see the module docs). Only
/// partitions whose position moved forward are returned.
pub fn advance(
    old: &ReplayPosition,
    records: &[DlqRecord],
    done: impl Fn(&DlqRecord) -> bool,
) -> ReplayPosition {
    let mut moved = ReplayPosition::new();
    let mut blocked: HashSet<i32> = HashSet::new();
    for record in records {
        let Position { partition, offset } = record.position;
        let start = old.get(&partition).copied().unwrap_or(0);
        if offset < start || blocked.contains(&partition) {
            continue;
        }
        let next = moved.get(&partition).copied().unwrap_or(start);
        // A gap in offsets (compaction, control records) is nothing to replay.
        if done(record) && offset >= next {
            moved.insert(partition, offset + 1);
        } else {
            blocked.insert(partition);
        }
    }
    moved.retain(|partition, next| *next > old.get(partition).copied().unwrap_or(0));
    moved
}

fn consumer(settings: &KafkaSettings, dlq_topic: &str) -> Result<BaseConsumer, DlqError> {
    // Never subscribes or joins: it only reads and writes the group's committed offsets.
    Ok(base_config(settings, "spine-dlq")
        .set("group.id", replay_group(dlq_topic))
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Reads the committed replay position of `dlq_topic`'s `partitions`. Blocking.
pub fn read(
    settings: &KafkaSettings,
    dlq_topic: &str,
    partitions: &[i32],
) -> Result<ReplayPosition, DlqError> {
    if partitions.is_empty() {
        return Ok(ReplayPosition::new());
    }
    let consumer = consumer(settings, dlq_topic)?;
    let mut list = TopicPartitionList::new();
    for &partition in partitions {
        list.add_partition(dlq_topic, partition);
    }
    let committed = consumer.committed_offsets(list, REQUEST_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(next) => Some((e.partition(), next)),
            _ => None,
        })
        .collect())
}

/// Commits `moved` (partitions whose position moved forward) as the group's offsets.
/// Blocking.
pub fn commit(
    settings: &KafkaSettings,
    dlq_topic: &str,
    moved: &ReplayPosition,
) -> Result<(), DlqError> {
    if moved.is_empty() {
        return Ok(());
    }
    let consumer = consumer(settings, dlq_topic)?;
    let mut list = TopicPartitionList::new();
    for (&partition, &next) in moved {
        list.add_partition_offset(dlq_topic, partition, Offset::Offset(next))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use spine_kit::kafka::Headers;

    use super::*;

    fn at(partition: i32, offset: i64) -> DlqRecord {
        DlqRecord {
            position: Position { partition, offset },
            key: None,
            payload: Vec::new(),
            headers: Headers::new(),
            timestamp_ms: None,
        }
    }

    fn positions(list: &[(i32, i64)]) -> ReplayPosition {
        list.iter().copied().collect()
    }

    #[test]
    fn the_position_moves_over_the_records_dealt_with_in_a_row_and_stops_at_the_first_left_out() {
        let records = [at(0, 0), at(0, 1), at(0, 2), at(0, 3), at(1, 0), at(1, 1)];
        // Partition 0: 0 and 1 done, 2 left out, 3 done. Partition 1: nothing done.
        let done = |r: &DlqRecord| r.position.partition == 0 && r.position.offset != 2;
        assert_eq!(
            advance(&ReplayPosition::new(), &records, done),
            positions(&[(0, 2)])
        );
    }

    #[test]
    fn the_position_never_moves_back_and_counts_what_is_below_it_as_done() {
        let records = [at(0, 0), at(0, 1), at(0, 2), at(0, 5)];
        let old = positions(&[(0, 2)]);
        assert_eq!(advance(&old, &records, |_| true), positions(&[(0, 6)]));
        assert_eq!(advance(&old, &records, |_| false), ReplayPosition::new());
        assert!(is_replayed(
            &old,
            Position {
                partition: 0,
                offset: 1
            }
        ));
        assert!(!is_replayed(
            &old,
            Position {
                partition: 0,
                offset: 2
            }
        ));
        assert!(!is_replayed(
            &old,
            Position {
                partition: 1,
                offset: 0
            }
        ));
    }

    #[test]
    fn each_dlq_has_a_replay_group_of_its_own() {
        assert_eq!(replay_group("email.dlq"), "spine-dlq.email.dlq.replay");
    }
}
