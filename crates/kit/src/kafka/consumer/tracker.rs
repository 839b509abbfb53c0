//! Bookkeeping of the runner, free of I/O so that it can be tested on its own:
//! - **lanes**: one FIFO per (partition, key), so that a key's records run one at a time, in
//!   order, while different keys run concurrently;
//! - **offsets**: per partition, the offsets still held; the storable offset is the lowest one
//!   still held (or one past the highest seen), so a slow record never lets its partition's
//!   committed offset move past it;
//! - **epochs**: every assignment of a partition gets a fresh epoch, so completions of records
//!   from before a revoke are recognised as stale and ignored.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use super::handler::Record;

/// A topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

/// Identifies a held record to the tracker when it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Its partition.
    pub partition: Partition,
    /// The assignment epoch it was accepted in.
    pub epoch: u64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its offset.
    pub offset: i64,
}

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    held: BTreeSet<i64>,
    next: i64,
    stored: i64,
}

type LaneKey = (Partition, Option<Vec<u8>>);

/// The runner's lanes and offsets.
#[derive(Debug, Default)]
pub struct Tracker {
    partitions: HashMap<Partition, PartitionState>,
    /// Records waiting behind a running record of the same key. A lane exists while a record of
    /// its key runs (or, under `max_rate`, waits for a slot to start); its queue holds the ones
    /// after it.
    lanes: HashMap<LaneKey, VecDeque<(Ticket, Record)>>,
    held: usize,
    next_epoch: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records held: running, waiting behind their key, or retrying.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes a new record. Returns it with its ticket when it may start now, or `None` when it
    /// waits behind an earlier record of its key.
    pub fn accept(&mut self, record: Record) -> Option<(Ticket, Record)> {
        let partition = Partition {
            topic: Arc::from(record.topic.as_str()),
            partition: record.partition,
        };
        let state = self.partitions.entry(partition.clone()).or_insert_with(|| {
            self.next_epoch += 1;
            PartitionState {
                epoch: self.next_epoch,
                held: BTreeSet::new(),
                next: record.offset,
                stored: record.offset,
            }
        });
        state.held.insert(record.offset);
        state.next = state.next.max(record.offset + 1);
        self.held += 1;
        let ticket = Ticket {
            partition: partition.clone(),
            epoch: state.epoch,
            key: record.key.clone(),
            offset: record.offset,
        };
        match self.lanes.entry((partition, record.key.clone())) {
            std::collections::hash_map::Entry::Occupied(mut lane) => {
                lane.get_mut().push_back((ticket, record));
                None
            }
            std::collections::hash_map::Entry::Vacant(lane) => {
                lane.insert(VecDeque::new());
                Some((ticket, record))
            }
        }
    }

    /// Marks a record done (succeeded or dead-lettered). Returns the next record of its key to
    /// start, if any, and the offset to store (the next offset to consume) if it advanced.
    /// A stale ticket (its partition was revoked since) changes nothing.
    pub fn complete(&mut self, ticket: &Ticket) -> (Option<(Ticket, Record)>, Option<i64>) {
        let Some(state) = self.partitions.get_mut(&ticket.partition) else {
            return (None, None);
        };
        if state.epoch != ticket.epoch || !state.held.remove(&ticket.offset) {
            return (None, None);
        }
        self.held -= 1;
        let position = state.held.first().copied().unwrap_or(state.next);
        let store = (position > state.stored).then(|| {
            state.stored = position;
            position
        });
        let lane_key = (ticket.partition.clone(), ticket.key.clone());
        let next = match self.lanes.get_mut(&lane_key) {
            Some(queue) => match queue.pop_front() {
                Some(next) => Some(next),
                None => {
                    self.lanes.remove(&lane_key);
                    None
                }
            },
            None => None,
        };
        (next, store)
    }

    /// Whether `ticket`'s record is still held in the assignment it was accepted in (its
    /// partition was not revoked since), so that it may still start.
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.partitions
            .get(&ticket.partition)
            .is_some_and(|state| state.epoch == ticket.epoch && state.held.contains(&ticket.offset))
    }

    /// Forgets a revoked partition: its waiting records are dropped (the next owner consumes
    /// them from the committed offset) and the completions of its running ones become stale.
    pub fn revoke(&mut self, partition: &Partition) {
        if let Some(state) = self.partitions.remove(partition) {
            self.held -= state.held.len();
        }
        self.lanes.retain(|(p, _), _| p != partition);
    }

    /// Partitions currently tracked.
    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::headers::Headers;

    fn record(partition: i32, offset: i64, key: &str) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: None,
            headers: Headers::new(),
            timestamp_ms: None,
            attempt: 1,
        }
    }

    #[test]
    fn a_key_runs_one_record_at_a_time_in_order() {
        let mut t = Tracker::new();
        let (first, _) = t.accept(record(0, 10, "a")).unwrap();
        assert!(t.accept(record(0, 11, "a")).is_none());
        assert!(t.accept(record(0, 12, "a")).is_none());
        let (next, store) = t.complete(&first);
        let (second, r) = next.unwrap();
        assert_eq!(r.offset, 11);
        assert_eq!(store, Some(11));
        let (next, _) = t.complete(&second);
        assert_eq!(next.unwrap().1.offset, 12);
    }

    #[test]
    fn different_keys_run_concurrently() {
        let mut t = Tracker::new();
        assert!(t.accept(record(0, 1, "a")).is_some());
        assert!(t.accept(record(0, 2, "b")).is_some());
        assert_eq!(t.held(), 2);
    }

    #[test]
    fn the_stored_offset_never_passes_a_record_still_held() {
        let mut t = Tracker::new();
        let (slow, _) = t.accept(record(0, 5, "slow")).unwrap();
        let (fast, _) = t.accept(record(0, 6, "fast")).unwrap();
        assert_eq!(t.complete(&fast).1, None, "offset 5 is still held");
        assert_eq!(t.complete(&slow).1, Some(7));
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn completions_from_before_a_revoke_are_ignored() {
        let mut t = Tracker::new();
        let (old, _) = t.accept(record(0, 5, "a")).unwrap();
        assert!(t.accept(record(0, 6, "a")).is_none());
        t.revoke(&old.partition);
        assert_eq!(t.held(), 0);
        let (new, _) = t.accept(record(0, 5, "a")).unwrap();
        assert!(!t.is_current(&old), "its partition was revoked since");
        assert!(t.is_current(&new));
        let (next, store) = t.complete(&old);
        assert!(
            next.is_none() && store.is_none(),
            "a stale completion changes nothing"
        );
        assert_eq!(t.complete(&new).1, Some(6));
    }
}
