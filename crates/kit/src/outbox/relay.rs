//! The relay: publishes outbox rows in order per key and marks them published only after the
//! broker acknowledged them.
//!
//! **Claiming.** A round selects, for each key, only its *oldest* unpublished row. A later row
//! of a key therefore can't be published before an earlier one, whatever fails or whoever else
//! is relaying; and since rows stay unpublished until acknowledged, a row whose transaction
//! commits late is found by a later round, never skipped (no high-water mark to jump past it,
//! unlike Watermill #311).
//! - **PostgreSQL:** the select is `FOR UPDATE SKIP LOCKED` inside a transaction held while
//!   publishing, so replicas running relays at once never claim the same row; a row is
//!   published twice only if a relay dies between the broker's ack and its commit.
//! - **SQLite:** one writer, and one relay per database file: the select runs outside a
//!   transaction (a read snapshot can't be upgraded to a write in WAL mode), then a short
//!   transaction marks the acknowledged rows.

use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;
use sqlx::{AnyConnection, Row};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::store::{CHANNEL, Outbox};
use crate::db::{Backend, now_millis};
use crate::kafka::headers::{self, Headers};
use crate::kafka::producer::{OutgoingRecord, PublishError, Publisher};
use crate::settings::OutboxSettings;

const HEADS: &str = "SELECT id, topic, msg_key, payload, headers, created_at FROM spine_outbox o
    WHERE published_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM spine_outbox e
                      WHERE e.msg_key = o.msg_key AND e.published_at IS NULL AND e.id < o.id)
    ORDER BY id
    LIMIT $1";

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed; the round is retried.
    #[error("outbox database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Some rows were not acknowledged; they stay unpublished and are retried.
    #[error("{failed} of {claimed} rows not published: {first}")]
    Publish {
        /// Rows that failed.
        failed: usize,
        /// Rows claimed in the round.
        claimed: usize,
        /// The first error.
        first: PublishError,
    },
}

impl RelayError {
    fn is_fatal(&self) -> bool {
        matches!(self, Self::Publish { first, .. } if first.is_fatal())
    }
}

/// Publishes an [`Outbox`]'s rows until cancelled. Run it as a supervised task.
pub struct Relay {
    outbox: Outbox,
    publisher: Publisher,
    settings: OutboxSettings,
    /// For LISTEN on PostgreSQL: other replicas' commits wake this relay.
    listen_url: Option<SecretString>,
}

struct Claimed {
    id: i64,
    created_at: i64,
    record: OutgoingRecord,
}

impl Relay {
    /// A relay for `outbox`. `database_url` is used to LISTEN on PostgreSQL.
    pub fn new(
        outbox: Outbox,
        publisher: Publisher,
        settings: OutboxSettings,
        database_url: &SecretString,
    ) -> Self {
        let listen_url = (outbox.backend == Backend::Postgres).then(|| database_url.clone());
        Self {
            outbox,
            publisher,
            settings,
            listen_url,
        }
    }

    /// Runs rounds until `token` is cancelled. Returns an error only when the producer is
    /// fatally broken; everything else is retried with backoff while rows wait.
    pub async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let mut listener = self.listen().await;
        let mut backoff = self.settings.initial_backoff;
        let mut last_prune = Instant::now();
        while !token.is_cancelled() {
            let result = self.round().await;
            if let Err(err) = self.outbox.refresh_backlog().await {
                tracing::warn!(error = %err, "cannot count the outbox backlog");
            }
            let wait = match result {
                Ok(claimed) => {
                    backoff = self.settings.initial_backoff;
                    if claimed as u32 >= self.settings.batch_size {
                        continue; // more is waiting
                    }
                    self.settings.poll_interval
                }
                Err(err) if err.is_fatal() => return Err(err.into()),
                Err(err) => {
                    tracing::warn!(error = %err, retry_in = ?backoff, "outbox round failed; rows wait");
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                    wait
                }
            };
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
            let notified = async {
                match listener.as_mut() {
                    Some(listener) => {
                        if let Err(err) = listener.recv().await {
                            tracing::warn!(error = %err, "outbox LISTEN failed; polling");
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = token.cancelled() => {}
                () = self.outbox.wake.notified() => {}
                () = notified => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        Ok(())
    }

    async fn listen(&self) -> Option<PgListener> {
        let url = self.listen_url.as_ref()?;
        let listen = async {
            let mut listener = PgListener::connect(url.expose_secret()).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listen.await {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::warn!(error = %err, "cannot LISTEN for outbox commits; polling only");
                None
            }
        }
    }

    /// One round: claim the heads of keys, publish them, mark the acknowledged ones.
    /// Returns how many rows were claimed.
    async fn round(&self) -> Result<usize, RelayError> {
        let limit = i64::from(self.settings.batch_size);
        match self.outbox.backend {
            Backend::Postgres => {
                let mut tx = self.outbox.pool.begin().await?;
                let claimed =
                    claim(&mut tx, &format!("{HEADS} FOR UPDATE SKIP LOCKED"), limit).await?;
                let (acked, failure) = self.publish(&claimed).await;
                mark_published(&mut tx, &acked).await?;
                tx.commit().await?;
                failure.map_or(Ok(claimed.len()), Err)
            }
            Backend::Sqlite => {
                let mut conn = self.outbox.pool.acquire().await?;
                let claimed = claim(&mut conn, HEADS, limit).await?;
                let (acked, failure) = self.publish(&claimed).await;
                let mut tx = self.outbox.pool.begin().await?;
                mark_published(&mut tx, &acked).await?;
                tx.commit().await?;
                failure.map_or(Ok(claimed.len()), Err)
            }
        }
    }

    /// Publishes every claimed row at once (they have distinct keys) and returns the ids the
    /// broker acknowledged, plus the failure if any row failed.
    async fn publish(&self, claimed: &[Claimed]) -> (Vec<i64>, Option<RelayError>) {
        let sends = claimed.iter().map(|row| {
            let span = producer_span(&row.record);
            let mut record = row.record.clone();
            // The producer span is the parent the consumers see.
            record.headers.inject_context(&span.context());
            async move {
                let result = self.publisher.send(&record).await;
                if let Ok(delivery) = &result {
                    tracing::Span::current()
                        .record("messaging.destination.partition.id", delivery.partition);
                    tracing::Span::current().record("messaging.kafka.offset", delivery.offset);
                }
                result
            }
            .instrument(span)
        });
        let results = futures::future::join_all(sends).await;
        let now = now_millis();
        let mut acked = Vec::with_capacity(claimed.len());
        let mut failed = 0;
        let mut first = None;
        for (row, result) in claimed.iter().zip(results) {
            match result {
                Ok(_) => {
                    acked.push(row.id);
                    metrics::histogram!("spine_outbox_publish_latency_seconds")
                        .record((now - row.created_at).max(0) as f64 / 1000.0);
                }
                Err(err) => {
                    failed += 1;
                    first.get_or_insert(err);
                }
            }
        }
        metrics::counter!("spine_outbox_published_total").increment(acked.len() as u64);
        let failure = first.map(|first| RelayError::Publish {
            failed,
            claimed: claimed.len(),
            first,
        });
        (acked, failure)
    }
}

async fn claim(
    conn: &mut AnyConnection,
    sql: &str,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            let headers: Vec<u8> = row.try_get("headers")?;
            Ok(Claimed {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                record: OutgoingRecord {
                    topic: row.try_get("topic")?,
                    key: row.try_get("msg_key")?,
                    payload: row.try_get("payload")?,
                    // Written by `enqueue`; unreadable bytes would be a bug, not bad input.
                    headers: Headers::from_bytes(&headers).unwrap_or_default(),
                },
            })
        })
        .collect()
}

async fn mark_published(conn: &mut AnyConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
    let sql = format!(
        "UPDATE spine_outbox SET published_at = $1 WHERE id IN ({})",
        placeholders.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_millis());
    for id in ids {
        query = query.bind(*id);
    }
    query.execute(conn).await?;
    Ok(())
}

/// A producer span per the OpenTelemetry messaging conventions, child of the context stored
/// with the row (the request that wrote it), even minutes later or on another replica.
fn producer_span(record: &OutgoingRecord) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("{} publish", record.topic),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %record.topic,
        messaging.kafka.message.key = record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()),
        messaging.message.id = record.headers.get_str(headers::EVENT_ID),
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
    );
    let _ = span.set_parent(record.headers.extract_context());
    span
}
