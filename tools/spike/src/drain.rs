//! Drain time: how long after the spike (or the end of the load) the system took to work off
//! what had piled up.
//!
//! The clock starts at the *reference*: the end of the spike phase, or the end of the load
//! for profiles without one. The system is drained at the first lag sample where
//!
//! 1. every order accepted up to the reference has its outcome and its email (when the tool
//!    follows orders; that covers records still waiting in an outbox, which no lag shows);
//! 2. every group has consumed past the high watermarks taken at the first sample after (1):
//!    everything the spike's orders caused is consumed, even while a recovery phase keeps
//!    adding records (so lag rarely reads 0: the services commit once a second);
//! 3. once the load has ended, every group's lag is 0.
//!
//! Samples come once a second and groups commit once a second, so the drain time is good to
//! about two seconds. Past the reference plus `--drain-timeout` the answer is "not drained".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::kafka::{LagSample, Partition};

/// Follows lag samples after the reference until the system is drained or time runs out.
#[derive(Debug, Clone)]
pub struct DrainTracker {
    reference: Instant,
    deadline: Instant,
    e2e_done_at: Option<Instant>,
    target: Option<BTreeMap<Partition, i64>>,
    drained_at: Option<Instant>,
}

impl DrainTracker {
    /// A tracker whose clock starts at `reference` and gives up after `timeout`.
    pub fn new(reference: Instant, timeout: Duration) -> Self {
        Self {
            reference,
            deadline: reference + timeout,
            e2e_done_at: None,
            target: None,
            drained_at: None,
        }
    }

    /// Says at `now` whether every order accepted up to the reference has its outcome and
    /// email (always true when orders are not followed). Only the first `true` at or after
    /// the reference counts.
    pub fn orders_done(&mut self, now: Instant, done: bool) {
        if done && now >= self.reference && self.e2e_done_at.is_none() {
            self.e2e_done_at = Some(now);
        }
    }

    /// Looks at a new lag sample; `load_active` is whether requests are still being offered.
    pub fn observe(&mut self, sample: &LagSample, load_active: bool) {
        if self.drained_at.is_some() || sample.at < self.reference || sample.at > self.deadline {
            return;
        }
        let Some(done_at) = self.e2e_done_at else {
            return;
        };
        if sample.at < done_at {
            return;
        }
        let target = self.target.get_or_insert_with(|| sample.highs.clone());
        let caught_up = sample.groups.iter().all(|g| g.caught_up(target));
        let settled = load_active || sample.groups.iter().all(|g| g.lag == Some(0));
        if caught_up && settled {
            self.drained_at = Some(sample.at);
        }
    }

    /// The drain time, once drained.
    pub fn drained_after(&self) -> Option<Duration> {
        self.drained_at
            .map(|at| at.saturating_duration_since(self.reference))
    }

    /// Whether the time to drain has run out at `now` without draining.
    pub fn expired(&self, now: Instant) -> bool {
        self.drained_at.is_none() && now > self.deadline
    }

    /// When the clock started.
    pub fn reference(&self) -> Instant {
        self.reference
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::GroupLag;

    fn p() -> Partition {
        ("orders.events".to_owned(), 0)
    }

    fn sample(at: Instant, high: i64, position: i64) -> LagSample {
        LagSample {
            at,
            highs: BTreeMap::from([(p(), high)]),
            groups: vec![GroupLag {
                group: "inventory".into(),
                positions: BTreeMap::from([(p(), position)]),
                lag: Some(high - position),
            }],
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn drained_once_orders_are_done_and_groups_pass_the_target() {
        let t0 = Instant::now();
        let mut drain = DrainTracker::new(t0 + secs(10), secs(120));
        drain.observe(&sample(t0 + secs(9), 100, 100), true);
        drain.observe(&sample(t0 + secs(11), 100, 100), true);
        assert_eq!(drain.drained_after(), None, "orders not done yet");

        drain.orders_done(t0 + secs(12), false);
        drain.orders_done(t0 + secs(13), true);
        drain.observe(&sample(t0 + secs(12), 120, 120), true);
        assert_eq!(
            drain.drained_after(),
            None,
            "a sample older than the orders being done"
        );
        // The target is the high watermark at the first sample after: 150.
        drain.observe(&sample(t0 + secs(14), 150, 120), true);
        drain.observe(&sample(t0 + secs(15), 170, 149), true);
        assert_eq!(drain.drained_after(), None);
        // Still behind the head (lag 10 from recovery load), but past the target.
        drain.observe(&sample(t0 + secs(16), 190, 180), true);
        assert_eq!(drain.drained_after(), Some(secs(6)));
        drain.observe(&sample(t0 + secs(17), 190, 190), true);
        assert_eq!(
            drain.drained_after(),
            Some(secs(6)),
            "the first time counts"
        );
    }

    #[test]
    fn after_the_load_the_lag_must_be_zero() {
        let t0 = Instant::now();
        let mut drain = DrainTracker::new(t0, secs(120));
        drain.orders_done(t0, true);
        drain.observe(&sample(t0 + secs(1), 100, 100), false);
        // A later record (say an email fact caused by the last orders) not yet consumed.
        let mut behind = sample(t0 + secs(2), 101, 100);
        behind.groups[0].lag = Some(1);
        let mut drain2 = DrainTracker::new(t0, secs(120));
        drain2.orders_done(t0, true);
        drain2.observe(&sample(t0 + secs(1), 100, 99), false);
        drain2.observe(&behind, false);
        assert_eq!(drain2.drained_after(), None);
        drain2.observe(&sample(t0 + secs(3), 101, 101), false);
        assert_eq!(drain2.drained_after(), Some(secs(3)));
        assert_eq!(drain.drained_after(), Some(secs(1)));
    }

    #[test]
    fn an_unreadable_group_is_not_drained() {
        let t0 = Instant::now();
        let mut drain = DrainTracker::new(t0, secs(120));
        drain.orders_done(t0, true);
        let mut unreadable = sample(t0 + secs(1), 10, 10);
        unreadable.groups[0].lag = None;
        drain.observe(&unreadable, false);
        assert_eq!(drain.drained_after(), None);
    }

    #[test]
    fn past_the_timeout_it_is_not_drained() {
        let t0 = Instant::now();
        let mut drain = DrainTracker::new(t0, secs(5));
        drain.orders_done(t0 + secs(1), true);
        drain.observe(&sample(t0 + secs(2), 100, 50), false);
        assert!(!drain.expired(t0 + secs(4)));
        drain.observe(&sample(t0 + secs(6), 100, 100), false);
        assert_eq!(drain.drained_after(), None);
        assert!(drain.expired(t0 + secs(6)));
    }
}
