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

use sqlx::{Any, AnyPool, Transaction};

/// A consumer's inbox table (`spine_inbox`, shared by consumers, keyed by consumer and event).
#[derive(Clone)]
pub struct Inbox {
    pool: AnyPool,
    consumer: Arc<str>,
}

impl Inbox {
    /// Opens the inbox of `consumer` (usually the group id), creating the table if missing.
    /// The DDL is portable between SQLite and PostgreSQL.
    pub async fn new(pool: AnyPool, consumer: &str) -> Result<Self, sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS spine_inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at BIGINT NOT NULL,
                PRIMARY KEY (consumer, event_id)
            )",
        )
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            consumer: Arc::from(consumer),
        })
    }

    /// Starts the transaction of an event's effect and claims the event in it. Returns `None`
    /// when the event was already processed (the claim found a committed row). Commit the
    /// returned transaction only once the effect is written to it.
    pub async fn begin(
        &self,
        event_id: &str,
    ) -> Result<Option<Transaction<'static, Any>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
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

    /// The pool, for effects outside an inbox transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
