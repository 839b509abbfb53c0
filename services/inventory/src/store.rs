//! The inventory database: stock per SKU and reservations per order, written together with the
//! inbox row of the event that caused them and the outbox row of the fact they produce.

use std::collections::BTreeMap;

use spine_events::inventory::{ReservedLine, StockReservationFailed, StockReserved};
use spine_events::orders::LineItem;
use spine_kit::db::{Migration, migrate, now_millis};
use spine_kit::inbox::Inbox;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use sqlx::{AnyConnection, Row};
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
        let mut tx = self.outbox.pool().begin().await?;
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
        sqlx::query(
            "INSERT INTO stock (sku, available, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (sku) DO UPDATE SET available = excluded.available,
                                            updated_at = excluded.updated_at",
        )
        .bind(sku.as_str())
        .bind(quantity.get())
        .bind(now_millis())
        .execute(self.outbox.pool())
        .await?;
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

    /// Reserves every line of an order or none, once per event.
    ///
    /// Each SKU's units are summed over the order's lines, then taken with a conditional
    /// `UPDATE … WHERE available >= n`, in SKU order (so two orders never lock rows in opposite
    /// orders). When every SKU is taken, the inbox row, the stock, the reservation rows and the
    /// outbox row of StockReserved commit together. When one is short (or unknown, or the line
    /// is invalid), that transaction is rolled back and a new one writes the inbox row and
    /// StockReservationFailed.
    #[tracing::instrument(skip_all, fields(order.id = %order_id, event.id = event_id))]
    pub async fn reserve(
        &self,
        event_id: &str,
        order_id: Uuid,
        items: &[LineItem],
    ) -> Result<Reservation, StoreError> {
        let Some(mut tx) = self.inbox.begin(event_id).await? else {
            return Ok(Reservation::Unchanged);
        };
        if holds_reservation(&mut tx, order_id).await? {
            // Another event for the same order already reserved: record this one, do nothing.
            tx.commit().await?;
            return Ok(Reservation::Unchanged);
        }
        let wanted = units_per_sku(items);
        let now = now_millis();
        let mut short_skus = Vec::new();
        for (sku, units) in &wanted {
            let taken = *units > 0
                && sqlx::query(
                    "UPDATE stock SET available = available - $1, updated_at = $2
                     WHERE sku = $3 AND available >= $1",
                )
                .bind(*units)
                .bind(now)
                .bind(sku.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            // Keep going after a shortage, so the fact names every short SKU at once.
            if !taken {
                short_skus.push(sku.clone());
            }
        }
        if !short_skus.is_empty() {
            tx.rollback().await?;
            return self.fail(event_id, order_id, short_skus).await;
        }
        let mut lines = Vec::with_capacity(wanted.len());
        for (sku, units) in wanted {
            sqlx::query(
                "INSERT INTO reservations (order_id, sku, quantity, status, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(order_id.to_string())
            .bind(sku.as_str())
            .bind(units)
            .bind(RESERVED)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            lines.push(ReservedLine {
                sku,
                // Sums of i32 lines that passed the stock check fit: stock is at most 1e9.
                quantity: i32::try_from(units).unwrap_or(i32::MAX),
            });
        }
        let record = OutgoingRecord::from_event(&StockReserved::new(order_id, lines))?;
        self.outbox.enqueue(&mut tx, &record).await?;
        tx.commit().await?;
        self.outbox.committed(1);
        Ok(Reservation::Reserved)
    }

    async fn fail(
        &self,
        event_id: &str,
        order_id: Uuid,
        short_skus: Vec<String>,
    ) -> Result<Reservation, StoreError> {
        let Some(mut tx) = self.inbox.begin(event_id).await? else {
            return Ok(Reservation::Unchanged);
        };
        let fact = StockReservationFailed::new(order_id, "insufficient stock", short_skus.clone());
        self.outbox
            .enqueue(&mut tx, &OutgoingRecord::from_event(&fact)?)
            .await?;
        tx.commit().await?;
        self.outbox.committed(1);
        Ok(Reservation::Failed { short_skus })
    }

    /// Returns an order's reserved units to stock, once: the inbox row, the stock and the
    /// reservations (marked RELEASED) commit together, and released rows are never released
    /// again, whatever event asks.
    #[tracing::instrument(skip_all, fields(order.id = %order_id, event.id = event_id))]
    pub async fn release(&self, event_id: &str, order_id: Uuid) -> Result<Release, StoreError> {
        let Some(mut tx) = self.inbox.begin(event_id).await? else {
            return Ok(Release::Unchanged);
        };
        let held = sqlx::query(
            "SELECT sku, quantity FROM reservations WHERE order_id = $1 AND status = $2
             ORDER BY sku",
        )
        .bind(order_id.to_string())
        .bind(RESERVED)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let now = now_millis();
        for (sku, units) in &held {
            sqlx::query(
                "UPDATE stock SET available = available + $1, updated_at = $2 WHERE sku = $3",
            )
            .bind(*units)
            .bind(now)
            .bind(sku.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE reservations SET status = $1, released_at = $2
             WHERE order_id = $3 AND status = $4",
        )
        .bind(RELEASED)
        .bind(now)
        .bind(order_id.to_string())
        .bind(RESERVED)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if held.is_empty() {
            Release::Unchanged
        } else {
            Release::Released(held.len())
        })
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
