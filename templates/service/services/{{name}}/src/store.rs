//! The {{name}} database: one row per recorded order, written in one transaction with the
//! inbox row of the OrderPlaced that caused it and the outbox row of the {{Fact}} it produces.

use spine_events::orders::OrderPlaced;
use spine_kit::db::{Migration, migrate, now_millis};
use spine_kit::inbox::Inbox;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::events::{{Fact}};

// TODO(your domain): your tables. The same DDL suits both backends while it sticks to TEXT and
// BIGINT columns; a new change is a new `Migration` with the next version, never an edit.
const SCHEMA: &str = "
    CREATE TABLE {{name}}_orders (
        order_id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        recorded_at BIGINT NOT NULL
    );";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "{{name}}",
    sqlite: SCHEMA,
    postgres: SCHEMA,
}];

/// Why a store call failed; the consumer classifies each variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The fact could not be encoded (a bug: our own facts always encode).
    #[error(transparent)]
    Encode(#[from] spine_events::EncodeError),
}

/// What [`{{Name}}Store::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order was recorded and its fact enqueued.
    Recorded,
    /// Nothing to do: this event was processed before (inbox hit), or another event about the
    /// same order already recorded it.
    Unchanged,
}

/// One recorded order, as `GET /{{name}}/orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderView {
    /// The order id.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// Its total in minor units of `currency`.
    pub total_minor: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// When this service recorded it, in milliseconds since the Unix epoch.
    pub recorded_at: i64,
}

/// Recorded orders, with the outbox and inbox in the same database.
#[derive(Clone)]
pub struct {{Name}}Store {
    outbox: Outbox,
    inbox: Inbox,
}

impl {{Name}}Store {
    /// Opens the store, migrating the schema; `consumer_group` names the inbox.
    pub async fn new(outbox: Outbox, consumer_group: &str) -> Result<Self, sqlx::Error> {
        let pool = outbox.pool().clone();
        migrate(&pool, outbox.backend(), "{{name}}", MIGRATIONS).await?;
        let inbox = Inbox::new(pool, consumer_group).await?;
        Ok(Self { outbox, inbox })
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The pool, for the readiness probe.
    pub fn pool(&self) -> &AnyPool {
        self.outbox.pool()
    }

    /// Records a placed order and enqueues {{Fact}}, once per event and once per order.
    ///
    /// The pattern every effect follows: **inbox, effect, outbox, one transaction**.
    /// [`Inbox::begin`] opens the transaction and claims the event id in it; the effect and the
    /// outbox row go into the same transaction; the commit makes all three durable together.
    /// A redelivered event finds its inbox row and is skipped, and a crash before the commit
    /// leaves nothing behind, so at-least-once delivery has exactly one effect and one fact.
    /// The relay publishes the outbox row after the commit, so no fact ever describes a change
    /// that was rolled back.
    #[tracing::instrument(skip_all, fields(order.id = %placed.order_id, event.id = %placed.event_id))]
    pub async fn record(&self, placed: &OrderPlaced) -> Result<Outcome, StoreError> {
        let Some(mut tx) = self.inbox.begin(&placed.event_id.to_string()).await? else {
            return Ok(Outcome::Unchanged);
        };
        // TODO(your domain): your effect, written to `tx` only (never to the pool, which
        // would commit it outside the transaction).
        let inserted = sqlx::query(
            "INSERT INTO {{name}}_orders (order_id, customer_id, total_minor, currency, recorded_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(placed.order_id.to_string())
        .bind(placed.customer_id.as_str())
        .bind(placed.total_minor)
        .bind(placed.currency.as_str())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Another event about this order got here first: keep this event's inbox row, so
            // it is not looked at again, and publish nothing.
            tx.commit().await?;
            return Ok(Outcome::Unchanged);
        }
        let fact = {{Fact}}::new(
            placed.order_id,
            placed.customer_id.as_str(),
            placed.total_minor,
            placed.currency.as_str(),
        );
        self.outbox
            .enqueue(&mut tx, &OutgoingRecord::from_event(&fact)?)
            .await?;
        tx.commit().await?;
        // Wakes the relay (no waiting for its next poll) and counts the row into the backlog.
        self.outbox.committed(1);
        Ok(Outcome::Recorded)
    }

    /// One recorded order.
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT order_id, customer_id, total_minor, currency, recorded_at
             FROM {{name}}_orders WHERE order_id = $1",
        )
        .bind(order_id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(OrderView {
                order_id: row.try_get(0)?,
                customer_id: row.try_get(1)?,
                total_minor: row.try_get(2)?,
                currency: row.try_get(3)?,
                recorded_at: row.try_get(4)?,
            })
        })
        .transpose()
    }
}
