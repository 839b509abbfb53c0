//! The relay: publishes outbox rows in order per key, marks each one published as soon as the
//! broker acknowledged it, and isolates failures to their key.
//!
//! **Claiming.** The relay claims, for each key, only its *oldest* unpublished row (see
//! `claim`), and holds it with a timed claim (`outbox.claim_timeout`) while the send is in
//! flight. A later row of a key therefore can't be published before an earlier one, whatever
//! fails or whoever else is relaying; and since rows stay unpublished until acknowledged, a row
//! whose transaction commits late is found later, never skipped (no high-water mark to jump
//! past it, unlike Watermill #311). On PostgreSQL the claim runs `FOR UPDATE SKIP LOCKED`, so
//! replicas never claim the same row; on SQLite there is one relay per database file.
//!
//! **Flow.** Up to `outbox.batch_size` sends are in flight at once. As acks arrive they are
//! marked published (the acks that arrived together in one statement) and the freed keys' next
//! rows are claimed; nobody waits for the slowest send of a batch. The backlog gauge is kept
//! incrementally and recounted every `outbox.recount_interval`, so no round scans the backlog.
//!
//! **Failures.** A failed send backs off *its row* (`not_before`, doubling from
//! `outbox.initial_backoff` to `outbox.max_backoff`); every other key keeps flowing. Which
//! failures count toward the quarantine is [`rejects_the_row`]'s choice:
//! - errors *about the record* (too large, invalid or corrupt record, bad timestamp, invalid
//!   topic name, unreadable stored headers) are rejections: after `outbox.quarantine_after`
//!   of them the row is quarantined, and its key's later rows wait behind it;
//! - everything else (timeouts, transport errors, no leader, unknown partition, not enough
//!   replicas…) is treated as an outage and retried forever without counting. A broker outage
//!   makes every key fail with such errors, so it can never quarantine a row; a row that times
//!   out forever shows in the outbox's oldest-age alert instead.
//! - the producer's fatal codes (`kafka::producer::FATAL_CODES`) stop the relay, and with it
//!   the process, for a restart.
//!
//! **Shutdown.** A cancelled relay claims nothing more, marks the acks that arrive within
//! [`SHUTDOWN_GRACE`], and releases the claims of the rows still in flight, so that a broker
//! outage can't hold shutdown past its deadline nor keep those rows from another replica.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::claim::{Claimed, Failure};
use super::store::Outbox;
use crate::db::{Backend, now_millis};
use crate::kafka::producer::{PublishError, Publisher};
use crate::kafka::spans;
use crate::settings::OutboxSettings;

/// librdkafka and broker error codes that say the record itself can't be published, whatever
/// the state of the cluster: they count toward the quarantine.
pub const ROW_REJECTION_CODES: &[RDKafkaErrorCode] = &[
    RDKafkaErrorCode::MessageSizeTooLarge,
    RDKafkaErrorCode::InvalidMessageSize,
    RDKafkaErrorCode::MessageBatchTooLarge,
    RDKafkaErrorCode::InvalidMessage,
    RDKafkaErrorCode::InvalidRecord,
    RDKafkaErrorCode::InvalidTimestamp,
    RDKafkaErrorCode::BadMessage,
    RDKafkaErrorCode::InvalidTopic,
];

/// Whether `error` is about the record itself (it counts toward the row's quarantine) rather
/// than the broker being unavailable (retried forever, never counted). An allow-list: an error
/// this function doesn't know is assumed to be an outage, because quarantining a good row
/// stops its key, while retrying a bad one only costs retries.
pub fn rejects_the_row(error: &PublishError) -> bool {
    match error {
        PublishError::Encode(_) => true,
        PublishError::Delivery { source, .. } => source
            .rdkafka_error_code()
            .is_some_and(|code| ROW_REJECTION_CODES.contains(&code)),
        PublishError::Canceled => false,
    }
}

/// How long a cancelled relay still waits for its sends in flight. Short enough to fit any
/// shutdown deadline even while the broker is down (a send may take the whole
/// `kafka.producer.delivery_timeout`, 30 s by default).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Publishes an [`Outbox`]'s rows until cancelled. Run it as a supervised task.
pub struct Relay {
    outbox: Outbox,
    publisher: Publisher,
    settings: OutboxSettings,
}

/// The end of one send.
struct Sent {
    id: i64,
    created_at: i64,
    failures: i64,
    key: Option<Vec<u8>>,
    /// From the claim to the broker's answer as the relay takes it (when its loop next polls
    /// the sends): the producer, the broker and the relay's own statements meanwhile; the rest
    /// of commit → ack waited for a claim.
    in_flight: Duration,
    result: Result<(), SendError>,
}

enum SendError {
    Publish(PublishError),
    Unreadable(String),
}

impl SendError {
    fn rejects_the_row(&self) -> bool {
        match self {
            Self::Publish(err) => rejects_the_row(err),
            Self::Unreadable(_) => true,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Publish(err) => err.fmt(f),
            Self::Unreadable(err) => f.write_str(err),
        }
    }
}

impl Relay {
    /// A relay for `outbox`. A commit in this process ([`Outbox::committed`]) wakes it at
    /// once; rows committed by other replicas are found within `outbox.poll_interval`. Its
    /// writes (claims, marks, failures, pruning) go first at the database's write gate
    /// ([`crate::db::Role::Relay`]), whichever pool `outbox` has: the relay is the edge's
    /// hand-off to the spine, its commit → ack latency is part of what the edge promises, and
    /// its statements are short (one `UPDATE` of at most `outbox.batch_size` rows each).
    pub fn new(outbox: Outbox, publisher: Publisher, settings: OutboxSettings) -> Self {
        Self {
            outbox: outbox.with_role(crate::db::Role::Relay),
            publisher,
            settings,
        }
    }

    /// Publishes until `token` is cancelled, then waits up to [`SHUTDOWN_GRACE`] for the sends
    /// in flight and marks the acknowledged ones; rows still unacknowledged after it are
    /// released for the next relay (published again if their ack was merely late:
    /// at-least-once). Returns an error only when the producer is fatally broken; everything
    /// else is retried with backoff while rows wait.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        if self.outbox.backend == Backend::Sqlite {
            // One relay per SQLite file: claims left by a killed run are ours to drop.
            match self.outbox.release_claims().await {
                Ok(0) => {}
                Ok(released) => tracing::info!(released, "released the previous run's claims"),
                Err(err) => tracing::warn!(error = %err, "cannot release old outbox claims"),
            }
        }
        let mut in_flight = FuturesUnordered::new();
        // The ids of the rows in flight, to release them if shutdown can't wait for them.
        let mut sending: HashSet<i64> = HashSet::new();
        let mut give_up_at: Option<tokio::time::Instant> = None;
        // Acknowledged rows not yet marked (kept while the database fails).
        let mut unmarked: Vec<i64> = Vec::new();
        let mut claim_now = true;
        // Set while the database fails: the wait before trying it again.
        let mut db_backoff: Option<Duration> = None;
        let mut last_count: Option<Instant> = None;
        let mut last_oldest = Instant::now();
        let mut last_prune = Instant::now();
        loop {
            let stopping = token.is_cancelled();
            if stopping && give_up_at.is_none() {
                give_up_at = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            if !unmarked.is_empty() {
                match self.outbox.mark_published(&unmarked).await {
                    Ok(()) => {
                        self.outbox.published(unmarked.len());
                        unmarked.clear();
                        db_backoff = None;
                    }
                    Err(err) => self.database_failed(&mut db_backoff, &err, "mark"),
                }
            }
            if stopping && in_flight.is_empty() {
                break;
            }
            let room = (self.settings.batch_size as usize).saturating_sub(in_flight.len());
            if !stopping && claim_now && room > 0 && unmarked.is_empty() {
                claim_now = false;
                match self.outbox.claim(room, self.settings.claim_timeout).await {
                    Ok(rows) => {
                        db_backoff = None;
                        let claimed = Instant::now();
                        for row in rows {
                            sending.insert(row.id);
                            in_flight.push(send(self.publisher.clone(), row, claimed));
                        }
                    }
                    Err(err) => self.database_failed(&mut db_backoff, &err, "claim"),
                }
            }
            if last_count.is_none_or(|at| at.elapsed() >= self.settings.recount_interval) {
                last_count = Some(Instant::now());
                last_oldest = Instant::now();
                if let Err(err) = self.outbox.refresh_backlog().await {
                    tracing::warn!(error = %err, "cannot count the outbox backlog");
                }
            } else if last_oldest.elapsed() >= self.settings.poll_interval {
                last_oldest = Instant::now();
                if let Err(err) = self.outbox.refresh_oldest().await {
                    tracing::warn!(error = %err, "cannot read the outbox's oldest row");
                }
            }
            if last_prune.elapsed() >= self.settings.prune_interval {
                last_prune = Instant::now();
                match self.outbox.prune(self.settings.retention).await {
                    Ok(pruned) if pruned > 0 => {
                        tracing::info!(pruned, "pruned published outbox rows")
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "outbox pruning failed"),
                }
            }
            let wait = db_backoff.unwrap_or(self.settings.poll_interval);
            tokio::select! {
                Some(sent) = in_flight.next(), if !in_flight.is_empty() => {
                    // Take every ack that is already in: one statement marks them all.
                    let mut done = vec![sent];
                    while let Some(Some(sent)) = in_flight.next().now_or_never() {
                        done.push(sent);
                    }
                    for sent in &done {
                        sending.remove(&sent.id);
                    }
                    if let Some(fatal) = self.settle(done, &mut unmarked).await {
                        // The process restarts: leave the other rows in flight to the next relay.
                        self.give_up(&sending, &unmarked).await;
                        return Err(fatal.into());
                    }
                    // A key whose row was acknowledged has a new head.
                    claim_now = true;
                }
                () = token.cancelled(), if !stopping => {}
                () = tokio::time::sleep_until(give_up_at.unwrap_or_else(tokio::time::Instant::now)),
                    if give_up_at.is_some() => {
                    self.give_up(&sending, &unmarked).await;
                    return Ok(());
                }
                () = self.outbox.wake.notified() => claim_now = true,
                () = tokio::time::sleep(wait) => claim_now = true,
            }
        }
        Ok(())
    }

    /// Shutdown could not wait any longer: marks what was acknowledged and releases the claims
    /// of the rows still in flight, so that another replica (or the next run) takes them now
    /// rather than after `outbox.claim_timeout`.
    async fn give_up(&self, sending: &HashSet<i64>, unmarked: &[i64]) {
        if let Err(err) = self.outbox.mark_published(unmarked).await {
            tracing::warn!(error = %err, "cannot mark the last acknowledged rows; they will be published again");
        }
        let ids: Vec<i64> = sending.iter().copied().collect();
        if ids.is_empty() {
            return;
        }
        match self.outbox.release_claims_on(&ids).await {
            Ok(()) => tracing::info!(
                rows = ids.len(),
                "stopped with sends in flight; their rows are left for the next relay"
            ),
            Err(err) => tracing::warn!(error = %err, "cannot release the rows in flight"),
        }
    }

    fn database_failed(&self, backoff: &mut Option<Duration>, err: &sqlx::Error, what: &str) {
        let wait = backoff.map_or(self.settings.initial_backoff, |b| {
            (b * 2).min(self.settings.max_backoff)
        });
        *backoff = Some(wait);
        tracing::warn!(error = %err, retry_in = ?wait, "outbox {what} failed; rows wait");
    }

    /// Accounts for finished sends: acked rows join `unmarked`, failed ones back off (and
    /// may be quarantined). Returns a fatal producer error, if one came back.
    async fn settle(&self, done: Vec<Sent>, unmarked: &mut Vec<i64>) -> Option<PublishError> {
        let now = now_millis();
        let (mut acked, mut outage, mut first_outage) = (0u64, 0u64, None);
        let mut fatal = None;
        for sent in done {
            let err = match sent.result {
                Ok(()) => {
                    acked += 1;
                    unmarked.push(sent.id);
                    metrics::histogram!("spine_outbox_publish_latency_seconds")
                        .record((now - sent.created_at).max(0) as f64 / 1000.0);
                    metrics::histogram!("spine_outbox_send_seconds")
                        .record(sent.in_flight.as_secs_f64());
                    continue;
                }
                Err(SendError::Publish(err)) if err.is_fatal() => {
                    fatal.get_or_insert(err);
                    continue;
                }
                Err(err) => err,
            };
            let rejected = err.rejects_the_row();
            let error = err.to_string();
            let failure = Failure {
                rejected,
                error: &error,
                retry_in: self.backoff(sent.failures),
                quarantine_after: match self.settings.quarantine_after {
                    0 => i64::MAX,
                    n => i64::from(n),
                },
            };
            let key = sent.key.as_deref().map(String::from_utf8_lossy);
            let cause = if rejected { "rejected" } else { "unavailable" };
            metrics::counter!("spine_outbox_send_failures_total", "cause" => cause).increment(1);
            if !rejected {
                outage += 1;
                first_outage.get_or_insert(error.clone());
            }
            match self.outbox.record_failure(sent.id, &failure).await {
                Ok(true) => {
                    metrics::counter!("spine_outbox_quarantined_total").increment(1);
                    tracing::error!(
                        outbox.id = sent.id, messaging.kafka.message.key = key.as_deref(),
                        error = %error,
                        "outbox row quarantined: its key's later rows wait (docs/runbook.md)"
                    );
                }
                Ok(false) if rejected => tracing::warn!(
                    outbox.id = sent.id, messaging.kafka.message.key = key.as_deref(),
                    error = %error, retry_in = ?failure.retry_in,
                    "the broker rejected an outbox row; its key backs off"
                ),
                Ok(false) => {}
                // The claim runs out and the row is tried again.
                Err(db) => {
                    tracing::warn!(outbox.id = sent.id, error = %db, "cannot record a failed send")
                }
            }
        }
        metrics::counter!("spine_outbox_published_total").increment(acked);
        if let Some(error) = first_outage {
            // One line for the lot: in an outage every key fails.
            tracing::warn!(failed = outage, error = %error, "outbox sends failed; their keys back off");
        }
        fatal
    }

    /// The wait after a row's `failures`-th failure: doubling, capped.
    fn backoff(&self, failures: i64) -> Duration {
        let doublings = u32::try_from(failures.clamp(0, 20)).unwrap_or(20);
        self.settings
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.settings.max_backoff)
    }
}

/// Publishes one claimed row under its `send {topic}` span, child of the context stored with
/// the row (the request that wrote it, even minutes later or on another replica). The span is
/// the record's creation context: its context replaces the stored one in the headers.
async fn send(publisher: Publisher, row: Claimed, claimed: Instant) -> Sent {
    let result = match row.unreadable {
        Some(err) => Err(SendError::Unreadable(err)),
        None => {
            let span = spans::send_span_in(
                publisher.client_info(),
                &row.record,
                row.record.headers.extract_context(),
            );
            let mut record = row.record.clone();
            record.headers.inject_context(&span.context());
            let result = publisher.send(&record).instrument(span.clone()).await;
            spans::record_send(&span, &result);
            result.map(drop).map_err(SendError::Publish)
        }
    };
    Sent {
        id: row.id,
        created_at: row.created_at,
        failures: row.failures,
        key: row.record.key,
        in_flight: claimed.elapsed(),
        result,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;

    use super::*;

    fn delivery(code: RDKafkaErrorCode) -> PublishError {
        PublishError::Delivery {
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn errors_about_the_record_count_toward_the_quarantine() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::InvalidMessage,
        ] {
            assert!(rejects_the_row(&delivery(code)), "{code:?}");
        }
    }

    #[test]
    fn an_unavailable_broker_never_counts_toward_the_quarantine() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!rejects_the_row(&delivery(code)), "{code:?}");
        }
        assert!(!rejects_the_row(&PublishError::Canceled));
    }
}
