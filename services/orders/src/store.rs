//! The orders database: orders, their lines and status history, written together with the
//! outbox rows of the facts they produce.

use spine_events::Event;
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected};
use spine_kit::db::{Backend, Migration, WriteTx, in_order, migrate, now_millis, placeholder_list};
use spine_kit::inbox::Inbox;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use std::collections::{HashMap, HashSet};

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use uuid::Uuid;

use crate::domain::{NewOrder, OrderStatus};

pub mod placing;

use placing::NewRow;

/// The same DDL suits both backends: plain TEXT, BIGINT and INTEGER columns.
const SCHEMA: &str = "
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL,
        email TEXT NOT NULL,
        currency TEXT NOT NULL,
        total_minor BIGINT NOT NULL,
        sales_channel TEXT,
        status TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        request TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE order_items (
        order_id TEXT NOT NULL REFERENCES orders (id),
        line_no INTEGER NOT NULL,
        sku TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        unit_price_minor BIGINT NOT NULL,
        PRIMARY KEY (order_id, line_no)
    );
    CREATE TABLE order_transitions (
        order_id TEXT NOT NULL REFERENCES orders (id),
        seq INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        at BIGINT NOT NULL,
        PRIMARY KEY (order_id, seq)
    );
    CREATE INDEX orders_status ON orders (status);";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "orders",
    sqlite: SCHEMA,
    postgres: SCHEMA,
}];

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The event could not be encoded (a bug: our own events always encode).
    #[error(transparent)]
    Encode(#[from] spine_events::EncodeError),
}

/// What `place` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// A new order was saved with its OrderPlaced.
    Created {
        /// The new order's id.
        id: Uuid,
    },
    /// The idempotency key was used before with the same body: that order.
    Existing {
        /// The first order's id.
        id: Uuid,
        /// Its current status.
        status: OrderStatus,
    },
    /// The idempotency key was used before with a different body.
    KeyReused,
}

/// An order with its lines and history, as `GET /orders/{id}` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrderView {
    /// The order id.
    pub id: Uuid,
    /// Current status.
    pub status: OrderStatus,
    /// Who ordered.
    pub customer_id: String,
    /// Where mail goes.
    pub email: String,
    /// Currency of every amount.
    pub currency: String,
    /// Total in minor units.
    pub total_minor: i64,
    /// The lines.
    pub items: Vec<LineItem>,
    /// Every status the order went through, oldest first.
    pub history: Vec<Transition>,
}

/// One status change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    /// The new status.
    pub status: OrderStatus,
    /// Why, for a rejection.
    pub reason: Option<String>,
    /// When, in Unix milliseconds.
    pub at: i64,
}

/// The outcome of inventory's reservation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every line was reserved.
    Confirmed,
    /// Not; with the reason.
    Rejected(String),
}

/// One claimed outcome of a batch, for [`OutcomeBatch::apply_all`].
pub struct ClaimedOutcome<'a> {
    /// The order it is about.
    pub order_id: Uuid,
    /// Confirmed or rejected.
    pub outcome: &'a Outcome,
    /// The span of the record it came in (its fact is encoded inside it).
    pub span: &'a tracing::Span,
}

impl Outcome {
    /// The status it moves an order to.
    fn status(&self) -> OrderStatus {
        match self {
            Self::Confirmed => OrderStatus::Confirmed,
            Self::Rejected(_) => OrderStatus::Rejected,
        }
    }
}

/// Orders per statement of [`OutcomeBatch::apply_all`]: at most 4 placeholders a row.
const OUTCOME_CHUNK: usize = 200;

/// Orders, with the outbox and inbox in the same database.
#[derive(Clone)]
pub struct OrderStore {
    outbox: Outbox,
    inbox: Inbox,
    /// The group-commit writer of new orders, on SQLite ([`placing`]).
    placer: Option<placing::Placer>,
}

impl OrderStore {
    /// Opens the store, migrating the schema. On SQLite it starts the writer of new orders
    /// ([`placing`]) on the current runtime; the writer stops when the last clone of the
    /// store is dropped.
    pub async fn new(outbox: Outbox, consumer_group: &str) -> Result<Self, sqlx::Error> {
        let pool = outbox.pool().clone();
        migrate(&pool, outbox.backend(), "orders", MIGRATIONS).await?;
        let inbox = Inbox::new(pool, consumer_group).await?;
        let placer =
            (outbox.backend() == Backend::Sqlite).then(|| placing::Placer::spawn(outbox.clone()));
        Ok(Self {
            outbox,
            inbox,
            placer,
        })
    }

    /// The outbox, for the relay and load shedding.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Saves a new PENDING order and its OrderPlaced in one transaction. With an
    /// idempotency key, a repeat of the same request returns the first order instead.
    ///
    /// On SQLite the transaction is usually shared: the store's [`placing`] writer commits the
    /// orders that arrived while it was writing the previous ones together. `place` returns
    /// once its order is committed, either way.
    #[tracing::instrument(skip_all, fields(order.id))]
    pub async fn place(
        &self,
        order: &NewOrder,
        request: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Placed, StoreError> {
        if let Some(key) = idempotency_key
            && let Some(found) = self.by_idempotency_key(key, request).await?
        {
            return Ok(found);
        }
        let id = Uuid::now_v7();
        tracing::Span::current().record("order.id", tracing::field::display(id));
        let mut placed = OrderPlaced::new(
            id,
            &order.customer_id,
            &order.email,
            order.items.clone(),
            &order.currency,
        );
        placed.sales_channel = order.sales_channel.clone();
        let row = NewRow {
            id,
            order: order.clone(),
            request: request.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            // Encoded here, in the request's span: the record carries its trace context.
            record: OutgoingRecord::from_event(&placed)?,
            now: now_millis(),
        };
        let written = match &self.placer {
            Some(placer) => placer.write(row).await,
            None => placing::write_one(&self.outbox, &row).await,
        };
        if let Err(err) = written {
            // Two requests with one key raced; the other committed first.
            if let (Some(key), Some(db)) = (idempotency_key, err.as_database_error())
                && db.is_unique_violation()
            {
                return Ok(self
                    .by_idempotency_key(key, request)
                    .await?
                    .unwrap_or(Placed::KeyReused));
            }
            return Err(err.into());
        }
        metrics::counter!("orders_placed_total").increment(1);
        Ok(Placed::Created { id })
    }

    async fn by_idempotency_key(
        &self,
        key: &str,
        request: &str,
    ) -> Result<Option<Placed>, StoreError> {
        let row = sqlx::query("SELECT id, status, request FROM orders WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(self.outbox.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get("request")?;
        if stored != request {
            return Ok(Some(Placed::KeyReused));
        }
        let id: String = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        Ok(Some(Placed::Existing {
            id: id.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Pending),
        }))
    }

    /// The order with its lines and history.
    pub async fn get(&self, id: Uuid) -> Result<Option<OrderView>, StoreError> {
        let pool = self.outbox.pool();
        let Some(row) = sqlx::query(
            "SELECT status, customer_id, email, currency, total_minor FROM orders WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
        let items = sqlx::query(
            "SELECT sku, quantity, unit_price_minor FROM order_items WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(id.to_string())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok(LineItem::new(r.try_get::<String, _>(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
        let history = sqlx::query(
            "SELECT status, reason, at FROM order_transitions WHERE order_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Transition {
                status: OrderStatus::parse(&r.try_get::<String, _>(0)?)
                    .unwrap_or(OrderStatus::Pending),
                reason: r.try_get(1)?,
                at: r.try_get(2)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(OrderView {
            id,
            status: OrderStatus::parse(&row.try_get::<String, _>(0)?)
                .unwrap_or(OrderStatus::Pending),
            customer_id: row.try_get(1)?,
            email: row.try_get(2)?,
            currency: row.try_get(3)?,
            total_minor: row.try_get(4)?,
            items,
            history,
        }))
    }

    /// Starts the one transaction of a batch of inventory's outcomes and claims their events
    /// in it, with one multi-row inbox insert. `event_ids` are the events' ids in offset
    /// order; [`OutcomeBatch::claimed`] then says, per index, whether the event is new (an
    /// event processed before, or repeated earlier in the batch, is not: skip it).
    pub async fn begin_outcomes(&self, event_ids: &[&str]) -> Result<OutcomeBatch<'_>, StoreError> {
        let (tx, claimed) = self.inbox.begin_batch(event_ids).await?;
        Ok(OutcomeBatch {
            store: self,
            tx,
            claimed,
            enqueued: 0,
        })
    }

    /// Orders per status, for the gauge.
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>, sqlx::Error> {
        sqlx::query("SELECT status, COUNT(*) FROM orders GROUP BY status")
            .fetch_all(self.outbox.pool())
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}

/// The transaction of a batch of inventory's outcomes ([`OrderStore::begin_outcomes`]): its
/// inbox rows, and per claimed event the status change, its history row and the outbox row of
/// OrderConfirmed or OrderRejected, all committed together by [`OutcomeBatch::commit`].
/// Dropping it uncommitted rolls everything back.
pub struct OutcomeBatch<'a> {
    store: &'a OrderStore,
    tx: WriteTx,
    claimed: Vec<bool>,
    enqueued: i64,
}

impl OutcomeBatch<'_> {
    /// Whether the `index`th event of the batch was claimed (is new): apply only those.
    pub fn claimed(&self, index: usize) -> bool {
        self.claimed.get(index).copied().unwrap_or(false)
    }

    /// Applies the batch's claimed outcomes, given in offset order, as applying them one
    /// after another would, with a few multi-row statements for the whole batch rather than
    /// three per outcome (on SQLite each statement is a hand-off to the connection's worker
    /// thread). An order still PENDING changes status and gets its history row and its fact
    /// (OrderConfirmed or OrderRejected), encoded inside its record's span so that it carries
    /// that record's trace; an order's first outcome decides it, and one already final is left
    /// as it is (the event's inbox row stays, so a redelivery is skipped cheaply). Returns the first unknown order in offset order, if any: the
    /// caller must then drop the batch, not commit it.
    pub async fn apply_all(
        &mut self,
        outcomes: &[ClaimedOutcome<'_>],
    ) -> Result<Option<Uuid>, StoreError> {
        let mut seen = HashSet::with_capacity(outcomes.len());
        let first: Vec<&ClaimedOutcome<'_>> = outcomes
            .iter()
            .filter(|c| seen.insert(c.order_id))
            .collect();
        let now = now_millis();
        // What each order changed from PENDING returned: (email, currency, total).
        let mut changed: HashMap<String, (String, String, i64)> = HashMap::new();
        for status in [OrderStatus::Confirmed, OrderStatus::Rejected] {
            let ids: Vec<String> = first
                .iter()
                .filter(|c| c.outcome.status() == status)
                .map(|c| c.order_id.to_string())
                .collect();
            for chunk in ids.chunks(OUTCOME_CHUNK) {
                let sql = format!(
                    "UPDATE orders SET status = $1, updated_at = $2
                     WHERE status = $3 AND id IN ({})
                     RETURNING id, email, currency, total_minor",
                    placeholder_list(4, chunk.len())
                );
                let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)))
                    .bind(status.as_str())
                    .bind(now)
                    .bind(OrderStatus::Pending.as_str());
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                for row in query.fetch_all(&mut *self.tx).await? {
                    changed.insert(
                        row.try_get(0)?,
                        (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?),
                    );
                }
            }
        }
        let unchanged: Vec<String> = first
            .iter()
            .map(|c| c.order_id.to_string())
            .filter(|id| !changed.contains_key(id))
            .collect();
        let mut existing = HashSet::with_capacity(unchanged.len());
        for chunk in unchanged.chunks(OUTCOME_CHUNK) {
            let sql = format!(
                "SELECT id FROM orders WHERE id IN ({})",
                placeholder_list(1, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(&mut *self.tx).await? {
                existing.insert(row.try_get::<String, _>(0)?);
            }
        }
        if let Some(unknown) = unchanged.iter().find(|id| !existing.contains(*id)) {
            return Ok(Some(unknown.parse().unwrap_or_default()));
        }
        let mut transitions = Vec::with_capacity(changed.len());
        let mut records = Vec::with_capacity(changed.len());
        for claimed in &first {
            let id = claimed.order_id.to_string();
            let Some((email, currency, total_minor)) = changed.remove(&id) else {
                continue;
            };
            let order_id = claimed.order_id;
            let record = claimed.span.in_scope(|| match claimed.outcome {
                Outcome::Confirmed => fact(&OrderConfirmed {
                    event_id: spine_events::event::new_event_id(),
                    occurred_at: now,
                    order_id,
                    email,
                    currency,
                    total_minor,
                }),
                Outcome::Rejected(reason) => fact(&OrderRejected {
                    event_id: spine_events::event::new_event_id(),
                    occurred_at: now,
                    order_id,
                    email,
                    reason: reason.clone(),
                }),
            })?;
            records.push(record);
            transitions.push((id, claimed.outcome));
        }
        for chunk in transitions.chunks(OUTCOME_CHUNK) {
            // The order rows are locked (or, on SQLite, the database is) by this transaction,
            // and each order appears once, so MAX(seq) can't race.
            // The id is bound twice a row, so that the placeholders run in order (see
            // `in_order`).
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let p = row * 5;
                    format!(
                        "(${}, (SELECT COALESCE(MAX(seq), 0) + 1 FROM order_transitions WHERE order_id = ${}), ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO order_transitions (order_id, seq, status, reason, at) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (id, outcome) in chunk {
                let reason = match outcome {
                    Outcome::Confirmed => None,
                    Outcome::Rejected(reason) => Some(reason.clone()),
                };
                query = query
                    .bind(id.as_str())
                    .bind(id.as_str())
                    .bind(outcome.status().as_str())
                    .bind(reason)
                    .bind(now);
            }
            query.execute(&mut *self.tx).await?;
        }
        let records: Vec<&OutgoingRecord> = records.iter().collect();
        self.store
            .outbox
            .enqueue_many(&mut self.tx, &records)
            .await?;
        self.enqueued += records.len() as i64;
        Ok(None)
    }

    /// Commits the batch (inbox rows, effects and facts together), then wakes the relay once
    /// for the facts it enqueued.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if self.enqueued > 0 {
            self.store.outbox.committed(self.enqueued);
        }
        Ok(())
    }
}

fn fact<E: Event>(event: &E) -> Result<OutgoingRecord, spine_events::EncodeError> {
    OutgoingRecord::from_event(event)
}

async fn insert_transition(
    conn: &mut AnyConnection,
    order_id: Uuid,
    status: OrderStatus,
    reason: Option<&str>,
    at: i64,
) -> Result<(), sqlx::Error> {
    // The order row is locked (or, on SQLite, the database is) by the caller's transaction,
    // so MAX(seq) can't race.
    sqlx::query(
        "INSERT INTO order_transitions (order_id, seq, status, reason, at)
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM order_transitions WHERE order_id = $1",
    )
    .bind(order_id.to_string())
    .bind(status.as_str())
    .bind(reason.map(str::to_owned))
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}
