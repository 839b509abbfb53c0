//! Each accepted order followed to its outcome and its email, matched by order id.
//!
//! The load side reports each 202 with the order id from its body ([`Tracker::accepted`]);
//! the Kafka side reports each fact it reads ([`Tracker::observed`]). Either may come first
//! (a fact can be read before the POST's answer is processed), so facts for ids not yet known
//! wait a while in case their order turns up. Only the first outcome and the first email of
//! an order count: a redelivered fact changes nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use uuid::Uuid;

use super::latency;

/// A fact the tool follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `OrderConfirmed` on `orders.events`.
    Confirmed,
    /// `OrderRejected` on `orders.events`.
    Rejected,
    /// `EmailSent` on `email.events`.
    EmailSent,
}

/// End-to-end counts and latencies of the orders accepted in one phase.
#[derive(Debug, Clone)]
pub struct E2ePhase {
    /// Orders accepted (202 with an id).
    pub accepted: u64,
    /// Of those, confirmed.
    pub confirmed: u64,
    /// Of those, rejected (out of stock is a legitimate outcome).
    pub rejected: u64,
    /// Of those, with an email sent.
    pub emails: u64,
    /// Of those, with both an outcome and an email.
    pub complete: u64,
    /// From the POST's intended start to the outcome fact being read, in microseconds.
    pub outcome_latency: Histogram<u64>,
    /// From the POST's intended start to the email fact being read, in microseconds.
    pub email_latency: Histogram<u64>,
}

impl E2ePhase {
    fn new() -> Self {
        Self {
            accepted: 0,
            confirmed: 0,
            rejected: 0,
            emails: 0,
            complete: 0,
            outcome_latency: latency::histogram(),
            email_latency: latency::histogram(),
        }
    }

    /// Accepted orders still missing their outcome or their email.
    pub fn incomplete(&self) -> u64 {
        self.accepted - self.complete
    }

    /// Adds another phase's counts and histograms into this one.
    pub fn merge(&mut self, other: &E2ePhase) {
        self.accepted += other.accepted;
        self.confirmed += other.confirmed;
        self.rejected += other.rejected;
        self.emails += other.emails;
        self.complete += other.complete;
        // Both histograms auto-resize, so adding can't fail on range.
        let _ = self.outcome_latency.add(&other.outcome_latency);
        let _ = self.email_latency.add(&other.email_latency);
    }
}

#[derive(Debug)]
struct Order {
    phase: usize,
    intended: Instant,
    outcome: bool,
    email: bool,
}

/// Matches accepted orders with the facts read from Kafka.
#[derive(Debug)]
pub struct Tracker {
    orders: HashMap<Uuid, Order>,
    early: HashMap<Uuid, Vec<(Fact, Instant)>>,
    phases: Vec<E2ePhase>,
    untracked: u64,
}

impl Tracker {
    /// A tracker for a profile of `phases` phases.
    pub fn new(phases: usize) -> Self {
        Self {
            orders: HashMap::new(),
            early: HashMap::new(),
            phases: (0..phases).map(|_| E2ePhase::new()).collect(),
            untracked: 0,
        }
    }

    /// Order `id` of `phase`, whose POST was due at `intended`, was accepted.
    pub fn accepted(&mut self, id: Uuid, phase: usize, intended: Instant) {
        if self.orders.contains_key(&id) {
            return;
        }
        self.orders.insert(
            id,
            Order {
                phase,
                intended,
                outcome: false,
                email: false,
            },
        );
        self.phases[phase].accepted += 1;
        for (fact, at) in self.early.remove(&id).unwrap_or_default() {
            self.observed(id, fact, at);
        }
    }

    /// A 202 whose body had no order id: it can't be followed.
    pub fn untracked(&mut self) {
        self.untracked += 1;
    }

    /// `fact` about order `id` was read at `at`.
    pub fn observed(&mut self, id: Uuid, fact: Fact, at: Instant) {
        let Some(order) = self.orders.get_mut(&id) else {
            self.early.entry(id).or_default().push((fact, at));
            return;
        };
        let phase = &mut self.phases[order.phase];
        let latency = at.saturating_duration_since(order.intended);
        let was_complete = order.outcome && order.email;
        match fact {
            Fact::Confirmed | Fact::Rejected if !order.outcome => {
                order.outcome = true;
                if fact == Fact::Confirmed {
                    phase.confirmed += 1;
                } else {
                    phase.rejected += 1;
                }
                latency::record(&mut phase.outcome_latency, latency);
            }
            Fact::EmailSent if !order.email => {
                order.email = true;
                phase.emails += 1;
                latency::record(&mut phase.email_latency, latency);
            }
            _ => {}
        }
        if !was_complete && order.outcome && order.email {
            phase.complete += 1;
        }
    }

    /// Forgets facts about unknown orders read more than `keep` before `now`: on a shared
    /// deployment they belong to someone else's orders.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        self.early.retain(|_, facts| {
            facts
                .iter()
                .any(|(_, at)| now.saturating_duration_since(*at) < keep)
        });
    }

    /// Per phase, in profile order.
    pub fn phases(&self) -> &[E2ePhase] {
        &self.phases
    }

    /// 202s that could not be followed (no id in the body).
    pub fn untracked_count(&self) -> u64 {
        self.untracked
    }

    /// Accepted orders of phases up to and including `phase` still missing their outcome or
    /// email.
    pub fn incomplete_up_to(&self, phase: usize) -> u64 {
        self.phases
            .iter()
            .take(phase + 1)
            .map(E2ePhase::incomplete)
            .sum()
    }

    /// The whole run's counts and histograms.
    pub fn total(&self) -> E2ePhase {
        let mut total = E2ePhase::new();
        for phase in &self.phases {
            total.merge(phase);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_complete_with_one_outcome_and_one_email() {
        let start = Instant::now();
        let mut tracker = Tracker::new(2);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        tracker.accepted(a, 0, start);
        tracker.accepted(b, 1, start + Duration::from_secs(1));
        assert_eq!(tracker.incomplete_up_to(1), 2);

        tracker.observed(a, Fact::Confirmed, start + Duration::from_millis(40));
        assert_eq!(tracker.incomplete_up_to(0), 1, "no email yet");
        tracker.observed(a, Fact::EmailSent, start + Duration::from_millis(90));
        assert_eq!(tracker.incomplete_up_to(0), 0);
        assert_eq!(tracker.incomplete_up_to(1), 1);

        tracker.observed(b, Fact::Rejected, start + Duration::from_millis(1050));
        tracker.observed(b, Fact::EmailSent, start + Duration::from_millis(1070));
        let total = tracker.total();
        assert_eq!(
            (
                total.accepted,
                total.confirmed,
                total.rejected,
                total.emails,
                total.complete
            ),
            (2, 1, 1, 2, 2)
        );
        let outcome = crate::record::LatencySummary::of(&total.outcome_latency).unwrap();
        assert!((outcome.max_ms - 50.0).abs() < 0.1, "{outcome:?}");
        assert!((outcome.p50_ms - 40.0).abs() < 0.1, "{outcome:?}");
    }

    #[test]
    fn a_redelivered_fact_counts_once() {
        let start = Instant::now();
        let mut tracker = Tracker::new(1);
        let id = Uuid::now_v7();
        tracker.accepted(id, 0, start);
        tracker.accepted(id, 0, start);
        for _ in 0..2 {
            tracker.observed(id, Fact::Confirmed, start + Duration::from_millis(5));
            tracker.observed(id, Fact::Rejected, start + Duration::from_millis(6));
            tracker.observed(id, Fact::EmailSent, start + Duration::from_millis(7));
        }
        let total = tracker.total();
        assert_eq!(
            (
                total.accepted,
                total.confirmed,
                total.rejected,
                total.emails,
                total.complete
            ),
            (1, 1, 0, 1, 1)
        );
        assert_eq!(total.outcome_latency.len(), 1);
    }

    #[test]
    fn a_fact_read_before_the_answer_is_matched_when_the_order_arrives() {
        let start = Instant::now();
        let mut tracker = Tracker::new(1);
        let id = Uuid::now_v7();
        tracker.observed(id, Fact::Confirmed, start + Duration::from_millis(30));
        tracker.observed(id, Fact::EmailSent, start + Duration::from_millis(35));
        tracker.accepted(id, 0, start);
        assert_eq!(tracker.total().complete, 1);
        let email = crate::record::LatencySummary::of(&tracker.total().email_latency).unwrap();
        assert!((email.max_ms - 35.0).abs() < 0.1);
    }

    #[test]
    fn facts_about_strangers_are_forgotten_after_a_while() {
        let start = Instant::now();
        let mut tracker = Tracker::new(1);
        let stranger = Uuid::now_v7();
        tracker.observed(stranger, Fact::Confirmed, start);
        tracker.prune(start + Duration::from_secs(10), Duration::from_secs(60));
        tracker.prune(start + Duration::from_secs(61), Duration::from_secs(60));
        tracker.accepted(stranger, 0, start);
        assert_eq!(tracker.total().confirmed, 0, "the early fact was pruned");
    }
}
