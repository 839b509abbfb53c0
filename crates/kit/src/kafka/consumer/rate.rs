//! The steady drain rate (`kafka.consumer.max_rate`): the dispatcher starts a record only when
//! the limiter grants it a slot, so a backlog drains at a steady pace instead of as fast as the
//! handlers go.
//! - [`Gcra`]: the arithmetic, a token bucket in its "next allowed instant" form (the generic
//!   cell rate algorithm), free of clocks: every call takes `now`, so tests inject time.
//! - [`Pacer`]: the records that may start but wait for a slot, in the order they became
//!   startable, with the limiter.
//!
//! Records waiting here are held (they count against `max_in_flight`), so a rate below what
//! arrives fills the in-flight bound, and the runner's usual backpressure takes over: it takes
//! a record only as one finishes, and pauses its partitions (still polling) when none finishes
//! for half of `max_poll_interval`. The backlog stays on the broker and in librdkafka's bounded
//! prefetch, never in an unbounded queue here.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::handler::Record;
use super::tracker::Ticket;

/// The burst a limiter allows after an idle spell: this fraction of a second's worth of
/// records (at least one), so the pace stays steady at any rate.
const BURST_PER_SECOND: f64 = 10.0;

/// The longest interval between two slots: a rate below one record a day is one a day (the
/// arithmetic stays far from `Instant`'s range).
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A rate limiter in the generic cell rate algorithm's form: it keeps the theoretical arrival
/// time (`tat`) of the next slot and admits a record when `now` has reached `tat` less the burst
/// tolerance. Over any span `t` it admits at most `burst + t * rate` records; at steady
/// demand, exactly one per `interval`.
#[derive(Debug, Clone)]
pub(super) struct Gcra {
    /// Time between two slots, `1 / rate`.
    interval: Duration,
    /// How far ahead of `tat` a slot may be taken: `(burst - 1) * interval`.
    tolerance: Duration,
    /// When the next slot is due at the steady pace; `None` before the first.
    tat: Option<Instant>,
}

impl Gcra {
    /// A limiter of `rate` records per second; `None` for 0 (no limit). `rate` is finite and
    /// not negative (the setting's deserializer checks).
    pub fn new(rate: f64) -> Option<Self> {
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(MAX_INTERVAL)
            .clamp(Duration::from_nanos(1), MAX_INTERVAL);
        let burst = Self::burst(rate);
        Some(Self {
            interval,
            tolerance: interval * (burst - 1),
            tat: None,
        })
    }

    /// The burst allowed at `rate`: a tenth of a second's worth, at least one record.
    pub fn burst(rate: f64) -> u32 {
        // Saturating float-to-int cast: huge rates get a huge (but finite) burst.
        ((rate / BURST_PER_SECOND).floor() as u32).max(1)
    }

    /// When the next slot may be taken (in the past or `now` when one is free).
    pub fn next_at(&self, now: Instant) -> Instant {
        match self.tat {
            None => now,
            Some(tat) => tat.checked_sub(self.tolerance).unwrap_or(now),
        }
    }

    /// Takes a slot if one is free at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if self.next_at(now) > now {
            return false;
        }
        // After an idle spell `tat` lies in the past: the steady pace restarts from `now`, with
        // the burst available again, not with the slots the idle spell left unused.
        let base = self.tat.map_or(now, |tat| tat.max(now));
        self.tat = Some(base + self.interval);
        true
    }
}

/// Startable records waiting for a slot of the limiter, first come first served.
///
/// A waiting record is the head of its key's lane, so per-key order holds: the next record of
/// that key becomes startable only when this one completed. A waiting record whose partition was
/// revoked meanwhile is dropped when it comes up, without taking a slot (its next owner
/// consumes it), so no record of a revoked partition is ever started here.
pub(super) struct Pacer {
    limiter: Gcra,
    waiting: VecDeque<(Ticket, Record)>,
}

impl Pacer {
    /// A pacer of `rate` records per second; `None` when `rate` is 0 (no limit).
    pub fn new(rate: f64) -> Option<Self> {
        Gcra::new(rate).map(|limiter| Self {
            limiter,
            waiting: VecDeque::new(),
        })
    }

    /// A record that may start as far as its key is concerned: returned to start now when
    /// nothing waits and a slot is free, queued otherwise (`None`).
    pub fn offer(
        &mut self,
        ticket: Ticket,
        record: Record,
        now: Instant,
    ) -> Option<(Ticket, Record)> {
        if self.waiting.is_empty() && self.limiter.try_acquire(now) {
            return Some((ticket, record));
        }
        self.waiting.push_back((ticket, record));
        None
    }

    /// The next waiting record to start now, if one waits and a slot is free. Records for
    /// which `current` is false (their partition was revoked since) are dropped on the way.
    pub fn next(
        &mut self,
        now: Instant,
        current: impl Fn(&Ticket) -> bool,
    ) -> Option<(Ticket, Record)> {
        while let Some((ticket, _)) = self.waiting.front() {
            if current(ticket) {
                break;
            }
            self.waiting.pop_front();
        }
        if self.waiting.is_empty() || !self.limiter.try_acquire(now) {
            return None;
        }
        self.waiting.pop_front()
    }

    /// Drops every waiting record for which `current` is false (its partition was revoked).
    pub fn drop_stale(&mut self, current: impl Fn(&Ticket) -> bool) {
        self.waiting.retain(|(ticket, _)| current(ticket));
    }

    /// When the dispatcher should come back to start a waiting record; `None` when none waits.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        (!self.waiting.is_empty()).then(|| self.limiter.next_at(now))
    }

    /// Records waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::consumer::tracker::Partition;
    use crate::kafka::headers::Headers;

    /// Admits as many records as the limiter allows over `span`, looking every `step` (the
    /// dispatcher wakes at least this often while records wait).
    fn admitted_over(limiter: &mut Gcra, start: Instant, span: Duration, step: Duration) -> u32 {
        let mut admitted = 0;
        let mut now = start;
        loop {
            while limiter.try_acquire(now) {
                admitted += 1;
            }
            if now >= start + span {
                return admitted;
            }
            now = (now + step).min(start + span);
        }
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(Gcra::new(0.0).is_none());
        assert!(Pacer::new(0.0).is_none());
    }

    #[test]
    fn the_burst_is_a_tenth_of_a_second_of_records_and_at_least_one() {
        assert_eq!(Gcra::burst(100.0), 10);
        assert_eq!(Gcra::burst(500.0), 50);
        assert_eq!(Gcra::burst(5.0), 1);
        assert_eq!(Gcra::burst(0.2), 1);
    }

    #[test]
    fn a_second_admits_the_rate_plus_the_burst_at_most() {
        let start = Instant::now();
        for step in [
            Duration::from_micros(100),
            Duration::from_millis(1),
            Duration::from_millis(7),
        ] {
            let mut limiter = Gcra::new(100.0).unwrap();
            let admitted = admitted_over(&mut limiter, start, Duration::from_secs(1), step);
            assert!(
                (99..=100 + 10).contains(&admitted),
                "step {step:?}: {admitted} records in one second at 100/s"
            );
        }
    }

    #[test]
    fn a_long_run_drains_at_the_rate_not_faster() {
        let start = Instant::now();
        let mut limiter = Gcra::new(500.0).unwrap();
        let admitted = admitted_over(
            &mut limiter,
            start,
            Duration::from_secs(60),
            Duration::from_millis(3),
        );
        // 500/s for 60 s, plus one burst of 50 at the start.
        assert!(
            (30_000 - 1..=30_000 + 50).contains(&admitted),
            "{admitted} in 60 s at 500/s"
        );
    }

    #[test]
    fn after_the_burst_slots_come_one_interval_apart() {
        let start = Instant::now();
        let mut limiter = Gcra::new(100.0).unwrap();
        for _ in 0..10 {
            assert!(limiter.try_acquire(start), "the burst is free at once");
        }
        assert!(!limiter.try_acquire(start), "the 11th waits");
        assert_eq!(limiter.next_at(start), start + Duration::from_millis(10));
        assert!(!limiter.try_acquire(start + Duration::from_millis(9)));
        assert!(limiter.try_acquire(start + Duration::from_millis(10)));
        assert!(!limiter.try_acquire(start + Duration::from_millis(10)));
    }

    #[test]
    fn an_idle_spell_does_not_bank_more_than_one_burst() {
        let start = Instant::now();
        let mut limiter = Gcra::new(100.0).unwrap();
        assert!(limiter.try_acquire(start));
        let later = start + Duration::from_secs(60);
        let mut burst = 0;
        while limiter.try_acquire(later) {
            burst += 1;
        }
        assert_eq!(burst, 10, "a minute idle still allows one burst only");
    }

    #[test]
    fn a_rate_below_one_per_second_spaces_records_by_seconds() {
        let start = Instant::now();
        let mut limiter = Gcra::new(0.5).unwrap();
        assert!(limiter.try_acquire(start));
        assert!(!limiter.try_acquire(start + Duration::from_millis(1999)));
        assert_eq!(limiter.next_at(start), start + Duration::from_secs(2));
        assert!(limiter.try_acquire(start + Duration::from_secs(2)));
    }

    #[test]
    fn a_tiny_rate_is_capped_at_one_record_a_day() {
        let start = Instant::now();
        let mut limiter = Gcra::new(1e-300).unwrap();
        assert!(limiter.try_acquire(start));
        assert_eq!(limiter.next_at(start), start + MAX_INTERVAL);
    }

    fn ticket(partition: i32, offset: i64) -> (Ticket, Record) {
        let record = Record {
            topic: "t".into(),
            partition,
            offset,
            key: Some(format!("k{offset}").into_bytes()),
            payload: None,
            headers: Headers::new(),
            timestamp_ms: None,
            attempt: 1,
        };
        let ticket = Ticket {
            partition: Partition {
                topic: "t".into(),
                partition,
            },
            epoch: 1,
            key: record.key.clone(),
            offset,
        };
        (ticket, record)
    }

    #[test]
    fn waiting_records_start_in_order_one_slot_each() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10.0).unwrap();
        let (t, r) = ticket(0, 0);
        assert!(
            pacer.offer(t, r, start).is_some(),
            "a free slot starts at once"
        );
        for offset in 1..4 {
            let (t, r) = ticket(0, offset);
            assert!(pacer.offer(t, r, start).is_none(), "no slot: it waits");
        }
        assert_eq!(pacer.waiting(), 3);
        assert!(pacer.next(start, |_| true).is_none());
        let due = pacer.wake_at(start).unwrap();
        assert_eq!(due, start + Duration::from_millis(100));
        let mut started = Vec::new();
        let mut now = due;
        while let Some((ticket, _)) = pacer.next(now, |_| true) {
            started.push(ticket.offset);
            now += Duration::from_millis(100);
        }
        assert_eq!(started, [1, 2, 3]);
        assert_eq!(pacer.wake_at(now), None, "nothing waits");
    }

    #[test]
    fn a_new_record_does_not_overtake_waiting_ones() {
        let start = Instant::now();
        let mut pacer = Pacer::new(10.0).unwrap();
        let (t, r) = ticket(0, 0);
        assert!(pacer.offer(t, r, start).is_some());
        let (t, r) = ticket(0, 1);
        assert!(pacer.offer(t, r, start).is_none());
        // A slot is free now, but offset 1 came first.
        let later = start + Duration::from_secs(1);
        let (t, r) = ticket(0, 2);
        assert!(pacer.offer(t, r, later).is_none());
        assert_eq!(pacer.next(later, |_| true).unwrap().0.offset, 1);
    }

    #[test]
    fn records_of_a_revoked_partition_are_dropped_without_taking_a_slot() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1.0).unwrap();
        let (t, r) = ticket(0, 0);
        assert!(pacer.offer(t, r, start).is_some());
        for (partition, offset) in [(1, 1), (1, 2), (0, 3), (1, 4)] {
            let (t, r) = ticket(partition, offset);
            assert!(pacer.offer(t, r, start).is_none());
        }
        let revoked = |t: &Ticket| t.partition.partition != 1;
        let now = start + Duration::from_secs(1);
        assert_eq!(pacer.next(now, revoked).unwrap().0.offset, 3);
        assert!(pacer.next(now, revoked).is_none(), "one slot a second");
        assert_eq!(
            pacer.waiting(),
            0,
            "offset 4, revoked, was dropped as it came up"
        );
        // No slot was spent on the revoked ones: the next is one interval after offset 3's.
        assert_eq!(pacer.limiter.next_at(now), now + Duration::from_secs(1));
    }

    #[test]
    fn stale_records_can_be_dropped_all_at_once() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1.0).unwrap();
        for (partition, offset) in [(0, 0), (0, 1), (1, 2), (0, 3), (1, 4)] {
            let (t, r) = ticket(partition, offset);
            let _ = pacer.offer(t, r, start);
        }
        assert_eq!(pacer.waiting(), 4);
        pacer.drop_stale(|t| t.partition.partition != 1);
        assert_eq!(pacer.waiting(), 2);
        let later = start + Duration::from_secs(10);
        assert_eq!(pacer.next(later, |_| true).unwrap().0.offset, 1);
    }
}
