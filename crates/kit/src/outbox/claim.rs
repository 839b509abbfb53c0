//! The relay's side of the table: claiming the heads of keys, marking acknowledged rows, and
//! recording failures (backoff, rejections, quarantine).
//!
//! A row's `not_before` is both its **claim** and its **backoff**: a relay that claims a row
//! sets it to `now + outbox.claim_timeout`, and a failed send sets it to `now + backoff`. No
//! relay (of this process or another replica) takes a row before its `not_before`, so a row is
//! in flight at most once, and a failing key waits alone while every other key flows.

use std::time::Duration;

use sqlx::{AnyPool, Row};

use super::store::{Outbox, Quarantined};
use crate::db::{Backend, now_millis};
use crate::kafka::headers::Headers;
use crate::kafka::producer::OutgoingRecord;

/// The oldest unpublished row of each key, unless it is quarantined, claimed or backing off.
/// A quarantined head is still unpublished, so its key's later rows are not heads: they wait
/// behind it (order is never broken silently).
const HEADS: &str = "SELECT id FROM spine_outbox o
    WHERE published_at IS NULL AND quarantined_at IS NULL
      AND (not_before IS NULL OR not_before <= $1)
      AND NOT EXISTS (SELECT 1 FROM spine_outbox e
                      WHERE e.msg_key = o.msg_key AND e.published_at IS NULL AND e.id < o.id)
    ORDER BY id
    LIMIT $3";

/// A row the relay holds until it is published, fails, or its claim runs out.
pub(super) struct Claimed {
    pub(super) id: i64,
    pub(super) created_at: i64,
    /// Failed sends so far, of any kind: drives the backoff.
    pub(super) failures: i64,
    pub(super) record: OutgoingRecord,
    /// The stored headers could not be read: the row itself is broken.
    pub(super) unreadable: Option<String>,
}

/// What a failed send does to its row.
pub(super) struct Failure<'a> {
    /// Whether the failure is about the row itself (counts toward the quarantine).
    pub(super) rejected: bool,
    /// The error, kept on the row for the runbook.
    pub(super) error: &'a str,
    /// When the row may be tried again.
    pub(super) retry_in: Duration,
    /// Rejections after which the row is quarantined (`i64::MAX`: never).
    pub(super) quarantine_after: i64,
}

impl Outbox {
    /// Claims up to `limit` heads for `claim_timeout`. PostgreSQL skips rows another replica
    /// is claiming at this instant; SQLite has a single writer (and one relay per file).
    pub(super) async fn claim(
        &self,
        limit: usize,
        claim_timeout: Duration,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        let heads = match self.backend {
            Backend::Postgres => format!("{HEADS} FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => HEADS.to_owned(),
        };
        let sql = format!(
            "UPDATE spine_outbox SET not_before = $2 WHERE id IN ({heads})
             RETURNING id, topic, msg_key, payload, headers, created_at, failures"
        );
        let _gate = self.writer.lock().await?;
        let now = now_millis();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(now.saturating_add(millis(claim_timeout)))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let stored: Vec<u8> = row.try_get("headers")?;
                // Written by `enqueue`; unreadable bytes are a broken row, quarantined in time.
                let (headers, unreadable) = match Headers::from_bytes(&stored) {
                    Some(headers) => (headers, None),
                    None => (Headers::new(), Some("unreadable stored headers".to_owned())),
                };
                Ok(Claimed {
                    id: row.try_get("id")?,
                    created_at: row.try_get("created_at")?,
                    failures: row.try_get("failures")?,
                    record: OutgoingRecord {
                        topic: row.try_get("topic")?,
                        key: row.try_get("msg_key")?,
                        payload: row.try_get("payload")?,
                        headers,
                    },
                    unreadable,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // RETURNING's order is unspecified.
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Marks acknowledged rows published, in one statement (the acks that arrived together).
    pub(super) async fn mark_published(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (2..ids.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE spine_outbox SET published_at = $1, not_before = NULL WHERE id IN ({})",
            placeholders.join(", ")
        );
        let _gate = self.writer.lock().await?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_millis());
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Records a failed send: the row backs off, and a rejection counts toward the quarantine.
    /// Returns whether the row is now quarantined.
    pub(super) async fn record_failure(
        &self,
        id: i64,
        failure: &Failure<'_>,
    ) -> Result<bool, sqlx::Error> {
        let _gate = self.writer.lock().await?;
        let now = now_millis();
        let quarantined: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE spine_outbox SET
                failures = failures + 1,
                rejections = rejections + $1,
                last_error = $2,
                not_before = $3,
                quarantined_at = CASE WHEN rejections + $1 >= $4 THEN $5 ELSE NULL END
             WHERE id = $6 AND published_at IS NULL
             RETURNING quarantined_at",
        )
        .bind(i64::from(failure.rejected))
        .bind(failure.error)
        .bind(now.saturating_add(millis(failure.retry_in)))
        .bind(failure.quarantine_after)
        .bind(now)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(matches!(quarantined, Some(Some(_))))
    }

    /// Drops the claims on `ids` (rows this relay was still sending when it stopped).
    pub(super) async fn release_claims_on(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "UPDATE spine_outbox SET not_before = NULL
             WHERE published_at IS NULL AND id IN ({})",
            placeholders.join(", ")
        );
        let _gate = self.writer.lock().await?;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Drops every claim and backoff, so that a restarted relay retries at once instead of
    /// waiting for the claims its previous run held. Only for SQLite, where one relay owns the
    /// file: on PostgreSQL the claims may belong to live replicas.
    pub(super) async fn release_claims(&self) -> Result<u64, sqlx::Error> {
        let _gate = self.writer.lock().await?;
        Ok(sqlx::query(
            "UPDATE spine_outbox SET not_before = NULL
             WHERE published_at IS NULL AND not_before IS NOT NULL",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Quarantined rows, for [`Outbox::quarantined`].
pub(super) async fn quarantined(pool: &AnyPool) -> Result<Vec<Quarantined>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, topic, msg_key, rejections, last_error, quarantined_at FROM spine_outbox
         WHERE quarantined_at IS NOT NULL AND published_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Quarantined {
                id: row.try_get("id")?,
                topic: row.try_get("topic")?,
                key: row.try_get("msg_key")?,
                rejections: row.try_get("rejections")?,
                last_error: row
                    .try_get::<Option<String>, _>("last_error")?
                    .unwrap_or_default(),
                quarantined_at: row.try_get("quarantined_at")?,
            })
        })
        .collect()
}
