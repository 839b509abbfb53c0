//! Bookkeeping of the runner, free of I/O so that it can be tested on its own:
//! - **lanes**: one FIFO per (partition, key), so that a key's records run one at a time, in
//!   order, while different keys run concurrently; or, for a batch handler, one FIFO per
//!   partition, whose waiting records leave together as the next batch;
//! - **offsets**: per partition, the offsets still held; the storable offset is the lowest one
//!   still held (or one past the highest seen), so a slow record never lets its partition's
//!   committed offset move past it;
//! - **epochs**: every assignment of a partition gets a fresh epoch, so completions of records
//!   from before a revoke are recognised as stale and ignored.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::handler::Record;

/// The tracker's maps hash a partition (and a key) for every record the dispatcher takes and
/// every completion: foldhash, not the standard library's SipHash, whose resistance to
/// flooding buys nothing for names and keys the runner's own assignment bounds.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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
    /// One lane per partition instead of per key (the batch path).
    by_partition: bool,
    /// The topics seen, shared by their partitions' names, so that a record does not
    /// allocate its topic's name again.
    topics: Vec<Arc<str>>,
}

impl Tracker {
    /// An empty tracker with a lane per key.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tracker with one lane per partition, for a batch handler: a partition's
    /// records run one batch at a time, in offset order.
    pub fn by_partition() -> Self {
        Self {
            by_partition: true,
            ..Self::default()
        }
    }

    fn lane_key(&self, partition: &Partition, key: &Option<Vec<u8>>) -> LaneKey {
        let key = if self.by_partition { None } else { key.clone() };
        (partition.clone(), key)
    }

    /// Records held: running, waiting behind their key, or retrying.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes a new record. Returns it with its ticket when it may start now, or `None` when it
    /// waits behind an earlier record of its key.
    pub fn accept(&mut self, record: Record) -> Option<(Ticket, Record)> {
        let partition = Partition {
            topic: self.topic(&record.topic),
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
        let lane = self.lane_key(&partition, &record.key);
        match self.lanes.entry(lane) {
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

    /// The shared name of `topic` (a runner follows a few topics: a scan beats a hash).
    fn topic(&mut self, topic: &str) -> Arc<str> {
        if let Some(known) = self.topics.iter().find(|t| ***t == *topic) {
            return known.clone();
        }
        let new: Arc<str> = Arc::from(topic);
        self.topics.push(new.clone());
        new
    }

    /// Marks a record done (succeeded or dead-lettered). Returns the next record of its key to
    /// start, if any, and the offset to store (the next offset to consume) if it advanced.
    /// A stale ticket (its partition was revoked since) changes nothing.
    pub fn complete(&mut self, ticket: &Ticket) -> (Option<(Ticket, Record)>, Option<i64>) {
        let (mut next, store) = self.complete_many(std::slice::from_ref(ticket), 1);
        (next.pop(), store)
    }

    /// Marks the records of one lane done together (a batch, all of one partition). Returns
    /// up to `max_next` records of the lane to start next (in offset order), and the offset to
    /// store if it advanced. Stale tickets change nothing.
    pub fn complete_many(
        &mut self,
        tickets: &[Ticket],
        max_next: usize,
    ) -> (Vec<(Ticket, Record)>, Option<i64>) {
        let mut store = None;
        let mut lane = None;
        // The tickets of a batch share a partition: look its state up once per run of them.
        let mut rest = tickets;
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .position(|t| t.partition != first.partition)
                .unwrap_or(rest.len());
            let (same, next) = rest.split_at(run);
            rest = next;
            let Some(state) = self.partitions.get_mut(&first.partition) else {
                continue;
            };
            let mut removed = false;
            for ticket in same {
                if state.epoch == ticket.epoch && state.held.remove(&ticket.offset) {
                    self.held -= 1;
                    removed = true;
                    lane = Some(ticket);
                }
            }
            if !removed {
                continue;
            }
            let position = state.held.first().copied().unwrap_or(state.next);
            if position > state.stored {
                state.stored = position;
                store = Some(position);
            }
        }
        let Some(ticket) = lane else {
            return (Vec::new(), store);
        };
        let lane_key = self.lane_key(&ticket.partition, &ticket.key);
        let mut next = Vec::new();
        if let Some(queue) = self.lanes.get_mut(&lane_key) {
            let take = max_next.min(queue.len());
            next.extend(queue.drain(..take));
            // The lane lives while a record of it runs: it ends when nothing follows.
            if next.is_empty() {
                self.lanes.remove(&lane_key);
            }
        }
        (next, store)
    }

    /// Moves up to `max` records waiting behind `head` in its lane (its partition's, on the
    /// batch path) to `into`, in offset order, to run together with it. The lane lives on
    /// while they run; their completion takes the records after them, as any completion does.
    pub fn follow(&mut self, head: &Ticket, max: usize, into: &mut Vec<(Ticket, Record)>) {
        let lane_key = self.lane_key(&head.partition, &head.key);
        if let Some(queue) = self.lanes.get_mut(&lane_key) {
            let take = max.min(queue.len());
            into.extend(queue.drain(..take));
        }
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

    #[test]
    fn records_that_queued_behind_a_head_start_with_it_and_the_lane_goes_on() {
        let mut t = Tracker::by_partition();
        let (head, _) = t.accept(record(0, 1, "a")).unwrap();
        for offset in 2..=5 {
            assert!(t.accept(record(0, offset, "b")).is_none());
        }
        let mut batch = Vec::new();
        t.follow(&head, 2, &mut batch);
        let offsets: Vec<i64> = batch.iter().map(|(_, r)| r.offset).collect();
        assert_eq!(offsets, [2, 3], "at most max, in offset order");
        assert_eq!(t.held(), 5, "followers stay held until they complete");
        let mut tickets = vec![head];
        tickets.extend(batch.into_iter().map(|(t, _)| t));
        let (next, store) = t.complete_many(&tickets, 8);
        let offsets: Vec<i64> = next.iter().map(|(_, r)| r.offset).collect();
        assert_eq!(offsets, [4, 5], "the rest follow the batch");
        assert_eq!(store, Some(4));
    }

    #[test]
    fn a_partition_lane_hands_out_what_waits_as_one_batch_in_order() {
        let mut t = Tracker::by_partition();
        let (first, _) = t.accept(record(0, 1, "a")).unwrap();
        assert!(
            t.accept(record(0, 2, "b")).is_none(),
            "the partition is busy"
        );
        assert!(t.accept(record(0, 3, "a")).is_none());
        assert!(t.accept(record(0, 4, "c")).is_none());
        let other = t.accept(record(1, 1, "a"));
        assert!(other.is_some(), "another partition runs concurrently");
        let (batch, store) = t.complete_many(&[first], 2);
        let offsets: Vec<i64> = batch.iter().map(|(_, r)| r.offset).collect();
        assert_eq!(offsets, [2, 3], "at most max_next, in offset order");
        assert_eq!(store, Some(2));
        let tickets: Vec<Ticket> = batch.into_iter().map(|(t, _)| t).collect();
        let (batch, store) = t.complete_many(&tickets, 2);
        assert_eq!(batch.len(), 1);
        assert_eq!(store, Some(4));
        let (last, _) = batch.into_iter().next().unwrap();
        let (batch, store) = t.complete_many(&[last], 2);
        assert!(batch.is_empty());
        assert_eq!(store, Some(5));
        assert!(
            t.accept(record(0, 5, "d")).is_some(),
            "an idle partition starts its next record at once"
        );
    }

    #[test]
    fn a_batch_completion_after_a_revoke_changes_nothing() {
        let mut t = Tracker::by_partition();
        let (first, _) = t.accept(record(0, 1, "a")).unwrap();
        assert!(t.accept(record(0, 2, "b")).is_none());
        t.revoke(&first.partition);
        let (next, store) = t.complete_many(&[first], 10);
        assert!(next.is_empty() && store.is_none());
        assert_eq!(t.held(), 0);
    }
}
