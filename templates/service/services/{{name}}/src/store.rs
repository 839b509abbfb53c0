//! The {{name}} database: one row per recorded order, written in one transaction with the
//! inbox row of the OrderPlaced that caused it and the outbox row of the {{Fact}} it produces.

use spine_events::orders::OrderPlaced;
use spine_kit::db::{Migration, WriteTx, migrate, now_millis};
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

/// What [`RecordBatch::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The order was recorded and its fact enqueued.
    Recorded,
    /// Nothing to do: another event about the same order already recorded it (the event is
    /// recorded in the inbox all the same).
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

    /// The pool, for the readiness probe and reads. A write of your own outside a batch goes
    /// through `self.outbox.begin()`, which takes the database's write gate (spine_kit::db::Writer).
    pub fn pool(&self) -> &AnyPool {
        self.outbox.pool()
    }

    /// Starts the one transaction of a batch of OrderPlaced and claims their events in it,
    /// with one multi-row inbox insert. `event_ids` are the events' ids in offset order;
    /// [`RecordBatch::claimed`] then says, per index, whether the event is new (one processed
    /// before, or repeated earlier in the batch, is not: skip it).
    pub async fn begin_batch(&self, event_ids: &[&str]) -> Result<RecordBatch<'_>, StoreError> {
        let (tx, claimed) = self.inbox.begin_batch(event_ids).await?;
        Ok(RecordBatch {
            store: self,
            tx,
            claimed,
            enqueued: 0,
        })
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

/// The transaction of a batch of OrderPlaced ([`{{Name}}Store::begin_batch`]).
///
/// The pattern every effect follows: **inbox, effect, outbox, one transaction**. The inbox
/// rows of the batch's events are claimed when it begins; each new event's effect and outbox
/// row go into the same transaction ([`RecordBatch::record`]); [`RecordBatch::commit`] makes
/// all of them durable together. A redelivered event finds its inbox row and is skipped, and
/// a crash or an error before the commit leaves nothing behind (dropping the batch rolls it
/// back), so at-least-once delivery has exactly one effect and one fact. The relay publishes
/// the outbox rows after the commit, so no fact ever describes a change that was rolled back.
pub struct RecordBatch<'a> {
    store: &'a {{Name}}Store,
    tx: WriteTx,
    claimed: Vec<bool>,
    enqueued: i64,
}

impl RecordBatch<'_> {
    /// Whether the `index`th event of the batch was claimed (is new): record only those.
    pub fn claimed(&self, index: usize) -> bool {
        self.claimed.get(index).copied().unwrap_or(false)
    }

    /// Records a placed order and enqueues {{Fact}}, once per order, in the batch's
    /// transaction. Later events of the batch see what earlier ones wrote (one transaction),
    /// so a batch behaves as its records would one after another. The fact is encoded here,
    /// so it carries the trace of the span this runs in (the caller's record's).
    #[tracing::instrument(skip_all, fields(order.id = %placed.order_id, event.id = %placed.event_id))]
    pub async fn record(&mut self, placed: &OrderPlaced) -> Result<Outcome, StoreError> {
        // TODO(your domain): your effect, written to `self.tx` only (never to the pool, which
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
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Another event about this order got here first: keep this event's inbox row, so
            // it is not looked at again, and publish nothing.
            return Ok(Outcome::Unchanged);
        }
        let fact = {{Fact}}::new(
            placed.order_id,
            placed.customer_id.as_str(),
            placed.total_minor,
            placed.currency.as_str(),
        );
        self.store
            .outbox
            .enqueue(&mut self.tx, &OutgoingRecord::from_event(&fact)?)
            .await?;
        self.enqueued += 1;
        Ok(Outcome::Recorded)
    }

    /// Commits the batch: its inbox rows, effects and facts together.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if self.enqueued > 0 {
            // Wakes the relay once (no waiting for its next poll) and counts the rows into
            // the backlog.
            self.store.outbox.committed(self.enqueued);
        }
        Ok(())
    }
}
