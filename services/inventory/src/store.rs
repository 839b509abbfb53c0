//! The inventory database: stock per SKU and reservations per order, written together with the
//! inbox rows of the events that caused them and the outbox rows of the facts they produce:
//! one transaction per batch of events ([`InventoryStore::begin_batch`], [`Effects`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use spine_events::inventory::{ReservedLine, StockReservationFailed, StockReserved};
use spine_events::orders::LineItem;
use spine_kit::db::{
    Backend, Migration, WriteTx, in_order, migrate, now_millis, placeholder_list, placeholder_rows,
};
use spine_kit::inbox::Inbox;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use uuid::Uuid;

use crate::domain::{Quantity, Sku};

/// The same DDL suits both backends: plain TEXT and BIGINT columns.
const SCHEMA: &str = "
    CREATE TABLE stock (
        sku TEXT PRIMARY KEY,
        available BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE reservations (
        order_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        released_at BIGINT,
        PRIMARY KEY (order_id, sku)
    );
    CREATE INDEX reservations_sku ON reservations (sku, status);";

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "inventory",
    sqlite: SCHEMA,
    postgres: SCHEMA,
}];

const RESERVED: &str = "RESERVED";
const RELEASED: &str = "RELEASED";
/// Values bound per locking statement (a batch holds at most a few thousand SKUs and orders).
const LOCK_CHUNK: usize = 1000;

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

/// What `reserve` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Every line was reserved and StockReserved enqueued.
    Reserved,
    /// Nothing was reserved and StockReservationFailed enqueued, naming the short SKUs.
    Failed {
        /// SKUs unknown or without enough stock, sorted.
        short_skus: Vec<String>,
    },
    /// The event was processed before (inbox hit), or the order already holds a reservation.
    Unchanged,
}

/// What `release` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// This many reserved lines went back to stock.
    Released(usize),
    /// The event was processed before, or the order holds no reservation.
    Unchanged,
}

/// One SKU's stock, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StockView {
    /// The SKU.
    pub sku: String,
    /// Units that can still be reserved.
    pub available: i64,
    /// Units held by reservations not released.
    pub reserved: i64,
}

/// Stock and reservations, with the outbox and inbox in the same database.
#[derive(Clone)]
pub struct InventoryStore {
    outbox: Outbox,
    inbox: Inbox,
}

impl InventoryStore {
    /// Opens the store, migrating the schema.
    pub async fn new(outbox: Outbox, consumer_group: &str) -> Result<Self, sqlx::Error> {
        let pool = outbox.pool().clone();
        migrate(&pool, outbox.backend(), "inventory", MIGRATIONS).await?;
        let inbox = Inbox::new(pool, consumer_group).await?;
        Ok(Self { outbox, inbox })
    }

    /// The outbox, for the relay.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Writes the stock of every SKU not present yet; present SKUs keep theirs. Returns how many
    /// were written.
    pub async fn seed(&self, seed: &[(Sku, Quantity)]) -> Result<u64, sqlx::Error> {
        let now = now_millis();
        let mut tx = self.outbox.begin().await?;
        let mut written = 0;
        for (sku, quantity) in seed {
            written += sqlx::query(
                "INSERT INTO stock (sku, available, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (sku) DO NOTHING",
            )
            .bind(sku.as_str())
            .bind(quantity.get())
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Sets a SKU's available stock, creating the SKU if it is new.
    pub async fn set(&self, sku: &Sku, quantity: Quantity) -> Result<StockView, sqlx::Error> {
        // A transaction of one statement, only to write through the outbox's write gate.
        let mut tx = self.outbox.begin().await?;
        sqlx::query(
            "INSERT INTO stock (sku, available, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (sku) DO UPDATE SET available = excluded.available,
                                            updated_at = excluded.updated_at",
        )
        .bind(sku.as_str())
        .bind(quantity.get())
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let view = self.get(sku).await?;
        Ok(view.unwrap_or(StockView {
            sku: sku.as_str().to_owned(),
            available: quantity.get(),
            reserved: 0,
        }))
    }

    /// One SKU's stock.
    pub async fn get(&self, sku: &Sku) -> Result<Option<StockView>, sqlx::Error> {
        let row = sqlx::query(STOCK_ONE)
            .bind(sku.as_str())
            .fetch_optional(self.outbox.pool())
            .await?;
        row.as_ref().map(stock_view).transpose()
    }

    /// Every SKU's stock, by SKU.
    pub async fn all(&self) -> Result<Vec<StockView>, sqlx::Error> {
        sqlx::query(STOCK_ALL)
            .fetch_all(self.outbox.pool())
            .await?
            .iter()
            .map(stock_view)
            .collect()
    }

    /// Starts the one transaction of a batch of orders' facts and claims their event ids in
    /// it, with one multi-row inbox insert. Returns the transaction and, per id (same order),
    /// whether it was claimed: `false` for an event processed before or repeated earlier in
    /// `event_ids`, whose effect must not be applied again. Apply the claimed events' effects
    /// in offset order through the returned [`Effects`], then [`Effects::commit`]; dropping it
    /// instead rolls the whole batch back, inbox rows included.
    pub async fn begin_batch(
        &self,
        event_ids: &[&str],
    ) -> Result<(Effects, Vec<bool>), sqlx::Error> {
        let (tx, claimed) = self.inbox.begin_batch(event_ids).await?;
        let effects = Effects {
            tx,
            outbox: self.outbox.clone(),
            stock: BTreeMap::new(),
            known: HashMap::new(),
            new_reservations: Vec::new(),
            released: Vec::new(),
            facts: Vec::new(),
        };
        Ok((effects, claimed))
    }
}

/// The open transaction of a batch: every effect of its claimed events is written here, and
/// commits (or rolls back) with their inbox rows, all or nothing.
///
/// The effects are decided in memory and written at [`Effects::commit`]: the stock rows the
/// batch touches are read once (locked, on PostgreSQL), each reservation and release changes
/// the batch's copy in offset order, and the commit writes one `UPDATE` per SKU, one multi-row
/// insert of the new reservations, one `UPDATE` of the released ones and the facts. A hot SKU's
/// row is then locked for a few statements, not for statements per order of the batch (on
/// PostgreSQL, batches of different partitions queued on it).
#[must_use = "dropping it rolls the whole batch back: commit it"]
pub struct Effects {
    tx: WriteTx,
    outbox: Outbox,
    /// The stock rows read so far: units available as this batch's effects leave them, and
    /// the change to write. `None`: no such SKU.
    stock: BTreeMap<String, Option<Units>>,
    /// Orders whose reservations are known: whether they hold any (any status), and their
    /// RESERVED lines from before this batch, once read.
    known: HashMap<Uuid, Held>,
    /// Reservations made in this batch, in order.
    new_reservations: Vec<NewReservation>,
    /// Orders whose reservations from before this batch were released in it.
    released: Vec<Uuid>,
    /// The facts, in the order of the effects that produced them.
    facts: Vec<OutgoingRecord>,
}

/// One stock row in a batch.
#[derive(Debug, Clone, Copy)]
struct Units {
    available: i64,
    delta: i64,
}

/// What a batch knows of an order's reservations.
#[derive(Debug, Default)]
struct Held {
    /// It holds (or held) a reservation: a new OrderPlaced for it changes nothing.
    any: bool,
    /// Its RESERVED lines from before this batch, once read, until released.
    reserved: Option<Vec<(String, i64)>>,
}

struct NewReservation {
    order_id: Uuid,
    sku: String,
    quantity: i64,
    released_at: Option<i64>,
}

impl Effects {
    /// Reads the stock rows the batch may change before any effect, in SKU order: those of the
    /// SKUs `reserving` asks for and of the SKUs the `releasing` orders hold, and whether the
    /// `placing` orders hold reservations already. On PostgreSQL it locks those stock rows
    /// (`FOR UPDATE`) until the commit: one reaction alone takes its SKUs in SKU order, but a
    /// batch takes those of its orders one order after another, so two batches of different
    /// partitions could take two SKUs in opposite orders and deadlock; locking the union first
    /// in one order prevents it. (SQLite has one writer at a time.) Effects on rows not read
    /// here read them when they need them.
    pub async fn lock_stock(
        &mut self,
        reserving: BTreeSet<&str>,
        releasing: &[Uuid],
        placing: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        let mut skus: BTreeSet<String> = reserving.into_iter().map(str::to_owned).collect();
        let releasing: Vec<String> = releasing.iter().map(Uuid::to_string).collect();
        for orders in releasing.chunks(LOCK_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT sku FROM reservations WHERE status = $1 AND order_id IN ({})",
                placeholder_list(2, orders.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(in_order(&self.tx, sql)))
                .bind(RESERVED);
            for order in orders {
                query = query.bind(order.as_str());
            }
            skus.extend(query.fetch_all(&mut *self.tx).await?);
        }
        let skus: Vec<String> = skus.into_iter().collect();
        // Chunks in SKU order keep the whole locking in SKU order.
        for chunk in skus.chunks(LOCK_CHUNK) {
            self.read_stock(chunk).await?;
        }
        let placing: Vec<String> = placing.iter().map(Uuid::to_string).collect();
        for orders in placing.chunks(LOCK_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT order_id FROM reservations WHERE order_id IN ({})",
                placeholder_list(1, orders.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(in_order(&self.tx, sql)));
            for order in orders {
                query = query.bind(order.as_str());
            }
            let holding: BTreeSet<String> =
                query.fetch_all(&mut *self.tx).await?.into_iter().collect();
            for order in orders {
                let id = order
                    .parse()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                self.known.entry(id).or_default().any |= holding.contains(order);
            }
        }
        Ok(())
    }

    /// Reads (on PostgreSQL, locks) the stock rows of `skus` not read yet.
    async fn read_stock(&mut self, skus: &[String]) -> Result<(), sqlx::Error> {
        let missing: Vec<&String> = skus
            .iter()
            .filter(|sku| !self.stock.contains_key(*sku))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let lock = if self.outbox.backend() == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!(
            "SELECT sku, available FROM stock WHERE sku IN ({}) ORDER BY sku{lock}",
            placeholder_list(1, missing.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
        for sku in &missing {
            query = query.bind(sku.as_str());
        }
        let rows = query.fetch_all(&mut *self.tx).await?;
        for sku in missing {
            self.stock.insert(sku.clone(), None);
        }
        for row in rows {
            let available: i64 = row.try_get(1)?;
            self.stock.insert(
                row.try_get(0)?,
                Some(Units {
                    available,
                    delta: 0,
                }),
            );
        }
        Ok(())
    }

    /// Whether `order_id` holds (or held) a reservation, from before this batch or made in it.
    async fn holds_reservation(&mut self, order_id: Uuid) -> Result<bool, sqlx::Error> {
        if let Some(held) = self.known.get(&order_id) {
            return Ok(held.any);
        }
        let any = holds_reservation(&mut self.tx, order_id).await?;
        self.known.entry(order_id).or_default().any = any;
        Ok(any)
    }

    /// Reserves every line of an order or none, as the effect of a claimed OrderPlaced.
    ///
    /// Each SKU's units are summed over the order's lines and taken from the batch's copy of
    /// the stock only if every SKU has enough: then the reservation and StockReserved are
    /// written at the commit. When one is short (or unknown, or the line is invalid), nothing is
    /// taken and StockReservationFailed is written instead. An order that already holds a
    /// reservation (another OrderPlaced for it, earlier in this batch or before) is left as it
    /// is: `Unchanged`.
    ///
    /// Call it inside the record's span: the fact carries the current trace context.
    #[tracing::instrument(skip_all, fields(order.id = %order_id))]
    pub async fn reserve(
        &mut self,
        order_id: Uuid,
        items: &[LineItem],
    ) -> Result<Reservation, StoreError> {
        if self.holds_reservation(order_id).await? {
            return Ok(Reservation::Unchanged);
        }
        let wanted = units_per_sku(items);
        let skus: Vec<String> = wanted.keys().cloned().collect();
        self.read_stock(&skus).await?;
        let short_skus: Vec<String> = wanted
            .iter()
            .filter(|&(sku, &units)| {
                units <= 0
                    || !matches!(self.stock.get(sku), Some(Some(row)) if row.available >= units)
            })
            .map(|(sku, _)| sku.clone())
            .collect();
        if !short_skus.is_empty() {
            let fact =
                StockReservationFailed::new(order_id, "insufficient stock", short_skus.clone());
            self.facts.push(OutgoingRecord::from_event(&fact)?);
            return Ok(Reservation::Failed { short_skus });
        }
        let mut lines = Vec::with_capacity(wanted.len());
        for (sku, units) in wanted {
            if let Some(Some(row)) = self.stock.get_mut(&sku) {
                row.available -= units;
                row.delta -= units;
            }
            self.new_reservations.push(NewReservation {
                order_id,
                sku: sku.clone(),
                quantity: units,
                released_at: None,
            });
            lines.push(ReservedLine {
                sku,
                // Sums of i32 lines that passed the stock check fit: stock is at most 1e9.
                quantity: i32::try_from(units).unwrap_or(i32::MAX),
            });
        }
        self.known.entry(order_id).or_default().any = true;
        let record = OutgoingRecord::from_event(&StockReserved::new(order_id, lines))?;
        self.facts.push(record);
        Ok(Reservation::Reserved)
    }

    /// Returns an order's reserved units to stock, as the effect of a claimed OrderRejected:
    /// the stock and the reservations (marked RELEASED) change together, and released rows are
    /// never released again, whatever event asks. `Unchanged` when the order holds nothing.
    #[tracing::instrument(skip_all, fields(order.id = %order_id))]
    pub async fn release(&mut self, order_id: Uuid) -> Result<Release, StoreError> {
        let now = now_millis();
        let mut held = self.reserved_before(order_id).await?;
        let from_before = !held.is_empty();
        for reservation in &mut self.new_reservations {
            if reservation.order_id == order_id && reservation.released_at.is_none() {
                reservation.released_at = Some(now);
                held.push((reservation.sku.clone(), reservation.quantity));
            }
        }
        if held.is_empty() {
            return Ok(Release::Unchanged);
        }
        if from_before {
            self.released.push(order_id);
        }
        let skus: Vec<String> = held.iter().map(|(sku, _)| sku.clone()).collect();
        self.read_stock(&skus).await?;
        for (sku, units) in &held {
            if let Some(Some(row)) = self.stock.get_mut(sku) {
                row.available += units;
                row.delta += units;
            }
        }
        Ok(Release::Released(held.len()))
    }

    /// The order's RESERVED lines from before this batch not yet released in it (emptied: a
    /// second release in the batch finds none).
    async fn reserved_before(&mut self, order_id: Uuid) -> Result<Vec<(String, i64)>, StoreError> {
        if let Some(Held {
            reserved: Some(lines),
            ..
        }) = self.known.get_mut(&order_id)
        {
            return Ok(std::mem::take(lines));
        }
        let lines = sqlx::query(
            "SELECT sku, quantity FROM reservations WHERE order_id = $1 AND status = $2
             ORDER BY sku",
        )
        .bind(order_id.to_string())
        .bind(RESERVED)
        .fetch_all(&mut *self.tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let known = self.known.entry(order_id).or_default();
        known.any |= !lines.is_empty();
        // What this release takes: none are left for a later one in the batch.
        known.reserved = Some(Vec::new());
        Ok(lines)
    }

    /// Writes the batch's effects (the stock changes, the reservations made and released, the
    /// facts), commits them with the inbox rows, then tells the outbox how many facts it
    /// enqueued (waking the relay).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let now = now_millis();
        for (sku, row) in &self.stock {
            if let Some(row) = row
                && row.delta != 0
            {
                sqlx::query(
                    "UPDATE stock SET available = available + $1, updated_at = $2 WHERE sku = $3",
                )
                .bind(row.delta)
                .bind(now)
                .bind(sku.as_str())
                .execute(&mut *self.tx)
                .await?;
            }
        }
        // Releases of reservations from before the batch first: the batch's own are inserted
        // with their final status after, so a release can't touch a later reservation.
        let released: Vec<String> = self.released.iter().map(Uuid::to_string).collect();
        for orders in released.chunks(LOCK_CHUNK) {
            let sql = format!(
                "UPDATE reservations SET status = $1, released_at = $2
                 WHERE status = $3 AND order_id IN ({})",
                placeholder_list(4, orders.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)))
                .bind(RELEASED)
                .bind(now)
                .bind(RESERVED);
            for order in orders {
                query = query.bind(order.as_str());
            }
            query.execute(&mut *self.tx).await?;
        }
        for chunk in self.new_reservations.chunks(LOCK_CHUNK) {
            let values = placeholder_rows(chunk.len(), 6);
            let sql = format!(
                "INSERT INTO reservations (order_id, sku, quantity, status, created_at, released_at)
                 VALUES {values}"
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for reservation in chunk {
                let status = if reservation.released_at.is_some() {
                    RELEASED
                } else {
                    RESERVED
                };
                query = query
                    .bind(reservation.order_id.to_string())
                    .bind(reservation.sku.as_str())
                    .bind(reservation.quantity)
                    .bind(status)
                    .bind(now)
                    .bind(reservation.released_at);
            }
            query.execute(&mut *self.tx).await?;
        }
        let facts: Vec<&OutgoingRecord> = self.facts.iter().collect();
        self.outbox.enqueue_many(&mut self.tx, &facts).await?;
        let enqueued = i64::try_from(self.facts.len()).unwrap_or(i64::MAX);
        self.tx.commit().await?;
        if enqueued > 0 {
            self.outbox.committed(enqueued);
        }
        Ok(())
    }
}

/// Stock with the units held by live reservations. `SUM` is cast because PostgreSQL sums
/// BIGINTs as NUMERIC.
macro_rules! stock_view_sql {
    ($filter:literal) => {
        concat!(
            "SELECT s.sku, s.available, CAST(COALESCE(SUM(r.quantity), 0) AS BIGINT)
             FROM stock s
             LEFT JOIN reservations r ON r.sku = s.sku AND r.status = 'RESERVED' ",
            $filter,
            " GROUP BY s.sku, s.available ORDER BY s.sku"
        )
    };
}
const STOCK_ALL: &str = stock_view_sql!("");
const STOCK_ONE: &str = stock_view_sql!("WHERE s.sku = $1");

fn stock_view(row: &sqlx::any::AnyRow) -> Result<StockView, sqlx::Error> {
    Ok(StockView {
        sku: row.try_get(0)?,
        available: row.try_get(1)?,
        reserved: row.try_get(2)?,
    })
}

async fn holds_reservation(conn: &mut AnyConnection, order_id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT 1 FROM reservations WHERE order_id = $1 LIMIT 1")
            .bind(order_id.to_string())
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// Units per SKU, summed over an order's lines, in SKU order. A line of zero or fewer units
/// (never sent by orders, which validates) makes its SKU's total non-positive, which `reserve`
/// reports as short rather than letting it add stock.
fn units_per_sku(items: &[LineItem]) -> BTreeMap<String, i64> {
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    let mut invalid = Vec::new();
    for item in items {
        if item.quantity <= 0 {
            invalid.push(item.sku.clone());
        }
        *wanted.entry(item.sku.clone()).or_default() += i64::from(item.quantity);
    }
    for sku in invalid {
        wanted.insert(sku, 0);
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_summed_per_sku_in_sku_order() {
        let items = [
            LineItem::new("B", 2, 100),
            LineItem::new("A", 1, 100),
            LineItem::new("B", 3, 100),
        ];
        let wanted: Vec<_> = units_per_sku(&items).into_iter().collect();
        assert_eq!(wanted, [("A".to_owned(), 1), ("B".to_owned(), 5)]);
    }

    #[test]
    fn a_non_positive_line_makes_its_sku_short() {
        let items = [LineItem::new("A", 5, 100), LineItem::new("A", -1, 100)];
        assert_eq!(units_per_sku(&items)["A"], 0);
    }
}
