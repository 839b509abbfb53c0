//! The inbox: the idempotency record of a consumer. An effect and its inbox row commit in one
//! transaction, so a redelivered event finds its row and is skipped: at-least-once delivery,
//! exactly-once effect.
//!
//! ```ignore
//! let Some(mut tx) = inbox.begin(event_id).await? else { return Ok(()) }; // a duplicate
//! sqlx::query("UPDATE stock …").execute(&mut *tx).await?;
//! tx.commit().await?;
//! ```

use std::sync::Arc;

use sqlx::AnyPool;

use crate::db::{Role, WriteTx, Writer};

/// Events per multi-row claim statement (3 bound values each, far below any limit).
const CLAIM_CHUNK: usize = 200;

/// A consumer's inbox table (`spine_inbox`, shared by consumers, keyed by consumer and event).
/// Its transactions take the database's write gate as the spine's ([`Role::Spine`]).
#[derive(Clone)]
pub struct Inbox {
    pool: AnyPool,
    writer: Writer,
    consumer: Arc<str>,
}

impl Inbox {
    /// Opens the inbox of `consumer` (usually the group id), creating the table if missing.
    /// The DDL is portable between SQLite and PostgreSQL.
    pub async fn new(pool: AnyPool, consumer: &str) -> Result<Self, sqlx::Error> {
        let writer = Writer::new(pool.clone(), Role::Spine);
        let mut conn = writer.lock().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS spine_inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at BIGINT NOT NULL,
                PRIMARY KEY (consumer, event_id)
            )",
        )
        .execute(&mut *conn)
        .await?;
        drop(conn);
        Ok(Self {
            writer,
            pool,
            consumer: Arc::from(consumer),
        })
    }

    /// Starts the transaction of an event's effect and claims the event in it. Returns `None`
    /// when the event was already processed (the claim found a committed row). Commit the
    /// returned transaction only once the effect is written to it.
    pub async fn begin(&self, event_id: &str) -> Result<Option<WriteTx>, sqlx::Error> {
        let mut tx = self.writer.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO spine_inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(self.consumer.as_ref())
        .bind(event_id)
        .bind(crate::db::now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            metrics::counter!("spine_inbox_duplicates_total", "consumer" => self.consumer.to_string())
                .increment(1);
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Starts the one transaction of a batch's effects and claims its events in it, with one
    /// multi-row insert per 200 events. Returns the transaction and, for each id in `event_ids`
    /// (same order), whether it was claimed: `false` for an event processed before, or for a
    /// repeat of an id earlier in the same call. Apply the effects of the claimed events only,
    /// then commit.
    pub async fn begin_batch(
        &self,
        event_ids: &[&str],
    ) -> Result<(WriteTx, Vec<bool>), sqlx::Error> {
        let mut tx = self.writer.begin().await?;
        let claimed = self.claim_batch(&mut tx, event_ids).await?;
        Ok((tx, claimed))
    }

    /// Claims `event_ids` inside the caller's transaction (pass `&mut *tx`); see
    /// [`Inbox::begin_batch`].
    pub async fn claim_batch(
        &self,
        conn: &mut sqlx::AnyConnection,
        event_ids: &[&str],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let now = crate::db::now_millis();
        let mut fresh = std::collections::HashSet::with_capacity(event_ids.len());
        let mut seen = std::collections::HashSet::with_capacity(event_ids.len());
        let unique: Vec<&str> = event_ids
            .iter()
            .copied()
            .filter(|id| seen.insert(*id))
            .collect();
        for chunk in unique.chunks(CLAIM_CHUNK) {
            // Every value bound per row, so that the placeholders run in order (`in_order`).
            let sql = format!(
                "INSERT INTO spine_inbox (consumer, event_id, processed_at) VALUES {}
                 ON CONFLICT DO NOTHING RETURNING event_id",
                crate::db::placeholder_rows(chunk.len(), 3)
            );
            let sql = crate::db::in_order(conn, sql);
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(self.consumer.as_ref()).bind(*id).bind(now);
            }
            fresh.extend(query.fetch_all(&mut *conn).await?);
        }
        let duplicates = event_ids.len() - fresh.len();
        if duplicates > 0 {
            metrics::counter!("spine_inbox_duplicates_total", "consumer" => self.consumer.to_string())
                .increment(duplicates as u64);
        }
        // The first occurrence of a claimed id is the claimed one.
        Ok(event_ids.iter().map(|id| fresh.remove(*id)).collect())
    }

    /// The pool, for reads outside an inbox transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
