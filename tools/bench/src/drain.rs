//! `backlog-drain`: the drain rate of a backlog queued first, measured on the broker.
//!
//! The benchmark stops the downstream consumers, has orders accept a backlog, waits until
//! orders' outbox has published every `OrderPlaced` of it, then starts the consumers again
//! (the *release*). This observer follows the three event topics from before the backlog:
//! - the `OrderPlaced` records after its start and before the release are the backlog (the
//!   orders followed); orders placed after the release (a load run while the backlog drains)
//!   are not part of it;
//! - an order's **outcome** is its first `OrderConfirmed` or `OrderRejected`, its **email**
//!   its first `EmailSent`; each is timed by the record's own timestamp (set when the
//!   producing relay handed it to librdkafka), not by when this observer read it, so a slow
//!   observer delays the report, never the figure;
//! - a path's rate is the backlog over the time from the release to its last order's fact.
//!
//! It joins no group (it is assigned every partition at the high watermark it found), so it
//! waits for no rebalance and leaves nothing on the broker. The benchmark talks to it through
//! files: it writes `--ready-file` once positioned and `--status-file` (counts) every
//! second, and reads `--release-file` (`<release unix ms> <orders accepted>`), written by the
//! benchmark at the moment it starts the consumers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use spine_events::Event;
use spine_events::email::EmailSent;
use spine_events::orders::{OrderConfirmed, OrderPlaced, OrderRejected};
use uuid::Uuid;

/// What a followed record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// An `OrderPlaced`: the order is part of the backlog.
    Placed,
    /// An `OrderConfirmed`.
    Confirmed,
    /// An `OrderRejected`.
    Rejected,
    /// An `EmailSent`.
    EmailSent,
    /// Any record of `inventory.events` (inventory's reaction to an order).
    Inventory,
}

/// Which order a record is about and what it is, or `None` for anything not followed
/// (garbage, another event). The event comes from the value's single-object header, the order
/// from the key (every spine record is keyed by its order id).
pub fn classify(topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Option<(Uuid, Fact)> {
    let id = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| Uuid::parse_str(k).ok())?;
    if topic == spine_events::inventory::TOPIC {
        return Some((id, Fact::Inventory));
    }
    let fact = match spine_events::peek(payload).ok()?.name() {
        OrderPlaced::NAME => Fact::Placed,
        OrderConfirmed::NAME => Fact::Confirmed,
        OrderRejected::NAME => Fact::Rejected,
        EmailSent::NAME => Fact::EmailSent,
        _ => return None,
    };
    Some((id, fact))
}

/// The backlog and the first fact of each kind per order, by record timestamp (Unix ms).
#[derive(Debug, Default)]
pub struct Tally {
    /// The backlog: each order's `OrderPlaced` time.
    placed: HashMap<Uuid, i64>,
    /// The release (Unix ms), once known: orders placed from then on are not backlog.
    released_ms: Option<i64>,
    outcomes: HashMap<Uuid, (i64, Fact)>,
    emails: HashMap<Uuid, i64>,
    inventory: HashMap<Uuid, i64>,
}

impl Tally {
    /// Counts one record of order `id`, timestamped `ms`.
    pub fn observe(&mut self, id: Uuid, fact: Fact, ms: i64) {
        match fact {
            Fact::Placed => {
                if self.released_ms.is_none_or(|release| ms < release) {
                    self.placed.entry(id).or_insert(ms);
                }
            }
            Fact::Confirmed | Fact::Rejected => {
                let first = self.outcomes.entry(id).or_insert((ms, fact));
                if ms < first.0 {
                    *first = (ms, fact);
                }
            }
            Fact::EmailSent => {
                let first = self.emails.entry(id).or_insert(ms);
                *first = (*first).min(ms);
            }
            Fact::Inventory => {
                let first = self.inventory.entry(id).or_insert(ms);
                *first = (*first).min(ms);
            }
        }
    }

    /// Records the release at `release_ms`: orders placed from then on (a load run during the
    /// drain) are not backlog, including any counted before the release was known.
    pub fn release(&mut self, release_ms: i64) {
        self.released_ms = Some(release_ms);
        self.placed.retain(|_, ms| *ms < release_ms);
    }

    /// Orders placed since the observer started (and before the release, once known).
    pub fn placed(&self) -> usize {
        self.placed.len()
    }

    /// Whether every placed order (at least `expected` of them) has its outcome and its email.
    pub fn drained(&self, expected: usize) -> bool {
        self.placed.len() >= expected
            && self
                .placed
                .keys()
                .all(|id| self.outcomes.contains_key(id) && self.emails.contains_key(id))
    }

    /// The counts the status file shows.
    pub fn status(&self) -> Status {
        Status {
            placed: self.placed.len(),
            outcomes: self.placed_with(|id| self.outcomes.contains_key(id)),
            emails: self.placed_with(|id| self.emails.contains_key(id)),
        }
    }

    fn placed_with(&self, has: impl Fn(&Uuid) -> bool) -> usize {
        self.placed.keys().filter(|id| has(id)).count()
    }

    /// The report, for a release at `release_ms` of `expected` accepted orders.
    pub fn report(&self, release_ms: i64, expected: usize, timed_out: bool) -> DrainReport {
        let outcome_times: Vec<i64> = self
            .placed
            .keys()
            .filter_map(|id| self.outcomes.get(id).map(|(ms, _)| *ms))
            .collect();
        let email_times: Vec<i64> = self
            .placed
            .keys()
            .filter_map(|id| self.emails.get(id).copied())
            .collect();
        let confirmed = self
            .placed
            .keys()
            .filter(|id| matches!(self.outcomes.get(id), Some((_, Fact::Confirmed))))
            .count();
        DrainReport {
            release_ms,
            accepted: expected,
            backlog: self.placed.len(),
            drained: !timed_out && self.drained(expected),
            outcome: PathReport::new(release_ms, self.placed.len(), &outcome_times),
            confirmed,
            rejected: outcome_times.len() - confirmed,
            email: PathReport::new(release_ms, self.placed.len(), &email_times),
            first_inventory_fact_s: self
                .placed
                .keys()
                .filter_map(|id| self.inventory.get(id))
                .min()
                .map(|ms| seconds(release_ms, *ms)),
        }
    }
}

fn seconds(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms) as f64 / 1000.0
}

/// The observer's progress, for the benchmark to wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Backlog orders whose `OrderPlaced` is on the topic (published by orders' relay).
    pub placed: usize,
    /// Of those, the ones with an outcome.
    pub outcomes: usize,
    /// Of those, the ones with an `EmailSent`.
    pub emails: usize,
}

/// One path's drain (outcome or email).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathReport {
    /// Backlog orders that reached the end of this path.
    pub orders: usize,
    /// Seconds from the release to the path's first fact (consumers starting, joining their
    /// groups and handling the first records).
    pub first_s: Option<f64>,
    /// Seconds from the release to the path's last fact.
    pub last_s: Option<f64>,
    /// `orders / last_s`: the drain rate from the release, the figure the target is judged on.
    pub per_s: Option<f64>,
    /// `orders / (last_s - first_s)`: the rate once the path was flowing (start-up excluded).
    pub per_s_flowing: Option<f64>,
}

impl PathReport {
    fn new(release_ms: i64, backlog: usize, times: &[i64]) -> Self {
        let first = times.iter().min().map(|ms| seconds(release_ms, *ms));
        let last = times.iter().max().map(|ms| seconds(release_ms, *ms));
        // Only a complete path has a rate: a partial one would be a rate of something else.
        let complete = backlog > 0 && times.len() == backlog;
        let rate = |secs: f64| (complete && secs > 0.0).then(|| times.len() as f64 / secs);
        Self {
            orders: times.len(),
            first_s: first,
            last_s: last,
            per_s: last.and_then(rate),
            per_s_flowing: first.zip(last).and_then(|(f, l)| rate(l - f)),
        }
    }
}

/// What `backlog-drain` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainReport {
    /// When the benchmark started the consumers (Unix ms).
    pub release_ms: i64,
    /// Orders the benchmark says orders accepted.
    pub accepted: usize,
    /// Orders whose `OrderPlaced` the observer saw (the backlog followed).
    pub backlog: usize,
    /// Whether every backlog order reached both ends in time.
    pub drained: bool,
    /// placed -> `OrderConfirmed` / `OrderRejected`.
    pub outcome: PathReport,
    /// Outcomes that are confirmations.
    pub confirmed: usize,
    /// Outcomes that are rejections.
    pub rejected: usize,
    /// placed -> outcome -> `EmailSent`.
    pub email: PathReport,
    /// Seconds from the release to inventory's first reaction to a backlog order.
    pub first_inventory_fact_s: Option<f64>,
}

/// Where `watch` reads and writes.
#[derive(Debug, Clone)]
pub struct WatchFiles {
    /// Written (empty) once the observer is positioned.
    pub ready: PathBuf,
    /// Rewritten every second with [`Status`] as JSON.
    pub status: PathBuf,
    /// Written by the benchmark at the release: `<unix ms> <accepted>`.
    pub release: PathBuf,
}

/// Reads `<unix ms> <accepted>`.
pub fn parse_release(text: &str) -> anyhow::Result<(i64, usize)> {
    let mut parts = text.split_whitespace();
    let (Some(ms), Some(accepted), None) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected `<unix ms> <accepted>`, got {text:?}");
    };
    Ok((
        ms.parse().context("release time")?,
        accepted.parse().context("accepted orders")?,
    ))
}

/// Follows the topics from their current end until the released backlog has drained or
/// `timeout` (counted from the release) passes, and returns the report.
pub fn watch(
    bootstrap_servers: &str,
    files: &WatchFiles,
    wait_for_release: Duration,
    timeout: Duration,
) -> anyhow::Result<DrainReport> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", format!("spine-bench-drain-{}", Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("log_level", "4")
        .create()
        .context("creating the observer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in [
        spine_events::orders::TOPIC,
        spine_events::inventory::TOPIC,
        spine_events::email::TOPIC,
    ] {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("metadata of {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            bail!("{topic} has no partitions on {bootstrap_servers}");
        }
        for partition in partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{partition}"))?;
            assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
    }
    consumer.assign(&assignment).context("assigning")?;
    // An `OrderPlaced` older than the observer is not part of the backlog (the backlog is
    // placed after the ready file exists), whatever the watermark read said.
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    std::fs::write(&files.ready, b"").context("writing the ready file")?;

    let mut tally = Tally::default();
    let mut release: Option<(i64, usize, Instant)> = None;
    let started = Instant::now();
    let mut last_check = Instant::now() - Duration::from_secs(1);
    loop {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(50))
            && let Some((id, fact)) = classify(
                message.topic(),
                message.key(),
                message.payload().unwrap_or_default(),
            )
            && let Some(ms) = message.timestamp().to_millis()
            && (fact != Fact::Placed || ms >= started_ms)
        {
            tally.observe(id, fact, ms);
        }
        if last_check.elapsed() < Duration::from_millis(200) {
            continue;
        }
        last_check = Instant::now();
        write_status(&files.status, tally.status())?;
        match release {
            None => {
                if let Some(text) = read_if_exists(&files.release)? {
                    let (ms, accepted) = parse_release(&text)?;
                    tally.release(ms);
                    release = Some((ms, accepted, Instant::now()));
                } else if started.elapsed() > wait_for_release {
                    bail!("no release within {wait_for_release:?}");
                }
            }
            Some((ms, accepted, at)) => {
                if tally.drained(accepted) {
                    return Ok(tally.report(ms, accepted, false));
                }
                if at.elapsed() > timeout {
                    return Ok(tally.report(ms, accepted, true));
                }
            }
        }
    }
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        // The benchmark writes the file in one go; an empty read is a write in progress.
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the status file atomically, so that a reader never sees half of it.
fn write_status(path: &Path, status: Status) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&status)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::now_v7()).collect()
    }

    #[test]
    fn records_are_classified_by_topic_header_and_key() {
        let order = workload::order(1);
        let key = order.order_id.to_string();
        let placed = spine_events::encode(&order).unwrap();
        assert_eq!(
            classify("orders.events", Some(key.as_bytes()), &placed),
            Some((order.order_id, Fact::Placed))
        );
        assert_eq!(
            classify("inventory.events", Some(key.as_bytes()), b"anything"),
            Some((order.order_id, Fact::Inventory))
        );
        assert_eq!(
            classify("orders.events", Some(key.as_bytes()), b"garbage"),
            None
        );
        assert_eq!(
            classify("orders.events", Some(b"not-a-uuid"), &placed),
            None
        );
        assert_eq!(classify("orders.events", None, &placed), None);
    }

    #[test]
    fn the_drain_runs_from_the_release_to_each_paths_last_fact() {
        let orders = ids(4);
        let mut tally = Tally::default();
        for id in &orders {
            tally.observe(*id, Fact::Placed, 500);
        }
        // Release at 1,000 ms; outcomes from 1,500 to 2,000, emails up to 5,000.
        for (i, id) in orders.iter().enumerate() {
            let fact = if i == 0 {
                Fact::Rejected
            } else {
                Fact::Confirmed
            };
            tally.observe(*id, fact, 1_500 + 500 * (i as i64 / 3));
            tally.observe(*id, Fact::EmailSent, 2_000 + 1_000 * i as i64);
        }
        // A redelivered outcome later on changes nothing.
        tally.observe(orders[1], Fact::Confirmed, 9_000);
        assert!(tally.drained(4));
        let report = tally.report(1_000, 4, false);
        assert!(report.drained);
        assert_eq!(
            (report.backlog, report.confirmed, report.rejected),
            (4, 3, 1)
        );
        assert_eq!(report.outcome.orders, 4);
        assert_eq!(report.outcome.first_s, Some(0.5));
        assert_eq!(report.outcome.last_s, Some(1.0));
        assert_eq!(report.outcome.per_s, Some(4.0));
        assert_eq!(report.outcome.per_s_flowing, Some(8.0));
        assert_eq!(report.email.last_s, Some(4.0));
        assert_eq!(report.email.per_s, Some(1.0));
    }

    #[test]
    fn an_incomplete_path_has_no_rate_and_the_backlog_is_not_drained() {
        let orders = ids(3);
        let mut tally = Tally::default();
        for id in &orders {
            tally.observe(*id, Fact::Placed, 0);
            tally.observe(*id, Fact::Confirmed, 2_000);
        }
        tally.observe(orders[0], Fact::EmailSent, 3_000);
        assert!(!tally.drained(3));
        assert_eq!(
            tally.status(),
            Status {
                placed: 3,
                outcomes: 3,
                emails: 1
            }
        );
        let report = tally.report(1_000, 3, true);
        assert!(!report.drained);
        assert_eq!(report.outcome.per_s, Some(3.0));
        assert_eq!(report.email.orders, 1);
        assert_eq!(report.email.per_s, None);
    }

    #[test]
    fn fewer_placed_than_accepted_is_not_drained() {
        let id = Uuid::now_v7();
        let mut tally = Tally::default();
        tally.observe(id, Fact::Placed, 0);
        tally.observe(id, Fact::Confirmed, 1);
        tally.observe(id, Fact::EmailSent, 2);
        assert!(tally.drained(1));
        assert!(!tally.drained(2));
    }

    #[test]
    fn facts_of_orders_outside_the_backlog_are_not_counted() {
        let mut tally = Tally::default();
        let ours = Uuid::now_v7();
        tally.observe(ours, Fact::Placed, 0);
        tally.observe(Uuid::now_v7(), Fact::Confirmed, 10);
        tally.observe(Uuid::now_v7(), Fact::EmailSent, 10);
        tally.observe(Uuid::now_v7(), Fact::Inventory, 5);
        tally.observe(ours, Fact::Inventory, 20);
        assert_eq!(tally.status().outcomes, 0);
        let report = tally.report(0, 1, false);
        assert_eq!(report.outcome.orders, 0);
        assert_eq!(report.first_inventory_fact_s, Some(0.02));
    }

    #[test]
    fn orders_placed_after_the_release_are_not_backlog() {
        let (backlog, early_load, late_load) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut tally = Tally::default();
        tally.observe(backlog, Fact::Placed, 900);
        // Read before the observer knew the release: dropped when it learns it.
        tally.observe(early_load, Fact::Placed, 1_100);
        assert_eq!(tally.placed(), 2);
        tally.release(1_000);
        tally.observe(late_load, Fact::Placed, 1_200);
        assert_eq!(tally.placed(), 1);
        tally.observe(backlog, Fact::Confirmed, 1_500);
        tally.observe(backlog, Fact::EmailSent, 2_000);
        // The load's orders have neither outcome nor email, and the backlog is still drained.
        assert!(tally.drained(1));
        let report = tally.report(1_000, 1, false);
        assert_eq!((report.backlog, report.email.orders), (1, 1));
        assert_eq!(report.email.per_s, Some(1.0));
    }

    #[test]
    fn the_release_file_names_a_time_and_a_count() {
        assert_eq!(
            parse_release("1700000000123 50000\n").unwrap(),
            (1_700_000_000_123, 50_000)
        );
        assert!(parse_release("1700000000123").is_err());
        assert!(parse_release("soon 5").is_err());
    }
}
