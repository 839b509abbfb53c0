//! The aggregates, each updated in the same transaction as the inbox row of the fact that
//! changed it, so a redelivered fact is never counted twice: one transaction per batch of facts
//! ([`AnalyticsStore::begin_batch`], [`Aggregation`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use spine_kit::db::{
    Backend, Migration, WriteTx, in_order, migrate, placeholder_list, placeholder_rows,
};
use spine_kit::inbox::Inbox;
use sqlx::{AnyPool, AssertSqlSafe, Row};

const SCHEMA: &str = "
    CREATE TABLE event_counts (
        event_type TEXT PRIMARY KEY,
        events BIGINT NOT NULL
    );
    CREATE TABLE order_facts (
        order_id TEXT PRIMARY KEY,
        placed_at BIGINT,
        status TEXT NOT NULL,
        currency TEXT,
        total_minor BIGINT
    );
    CREATE TABLE revenue (
        currency TEXT PRIMARY KEY,
        total_minor BIGINT NOT NULL,
        orders BIGINT NOT NULL
    );
    CREATE TABLE orders_per_minute (
        minute BIGINT PRIMARY KEY,
        orders BIGINT NOT NULL
    );
    CREATE TABLE time_to_outcome (
        order_id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        millis BIGINT NOT NULL
    );
    CREATE INDEX time_to_outcome_millis ON time_to_outcome (millis);";

/// Counter rows per statement (3 bound values each at most, far below any limit).
const COUNTER_CHUNK: usize = 300;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "aggregates",
    sqlite: SCHEMA,
    postgres: SCHEMA,
}];

/// A fact, reduced to what the aggregates need.
#[derive(Debug, Clone)]
pub enum Fact {
    /// An order was placed.
    Placed {
        /// Its id.
        order_id: String,
        /// When, in Unix milliseconds.
        at: i64,
        /// Its currency.
        currency: String,
        /// Its total in minor units.
        total_minor: i64,
    },
    /// An order reached its outcome.
    Outcome {
        /// Its id.
        order_id: String,
        /// When, in Unix milliseconds.
        at: i64,
        /// `CONFIRMED` or `REJECTED`.
        status: &'static str,
        /// Revenue for a confirmation: currency and total.
        revenue: Option<(String, i64)>,
    },
    /// Any other fact: counted by type only.
    Other,
}

/// The aggregates as `GET /stats` shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Facts seen per event type.
    pub events: BTreeMap<String, i64>,
    /// Orders per status (PLACED, CONFIRMED, REJECTED).
    pub orders_by_status: BTreeMap<String, i64>,
    /// Confirmed revenue per currency.
    pub revenue: BTreeMap<String, Revenue>,
    /// Orders placed per minute, most recent last.
    pub orders_per_minute: Vec<Minute>,
    /// Time from OrderPlaced to its confirmation or rejection.
    pub time_to_outcome_ms: Percentiles,
}

/// Revenue of one currency.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Revenue {
    /// Sum of confirmed totals, in minor units.
    pub total_minor: i64,
    /// Confirmed orders.
    pub orders: i64,
}

/// Orders placed in one minute.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start, Unix milliseconds.
    pub minute: i64,
    /// Orders placed in it.
    pub orders: i64,
}

/// Nearest-rank percentiles of a set of durations.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// How many durations.
    pub count: i64,
    /// Median, when there is any.
    pub p50: Option<i64>,
    /// 99th percentile, when there is any.
    pub p99: Option<i64>,
}

/// The analytics database.
#[derive(Clone)]
pub struct AnalyticsStore {
    pool: AnyPool,
    inbox: Inbox,
}

impl AnalyticsStore {
    /// Opens the store, migrating it.
    pub async fn new(pool: AnyPool, backend: Backend, consumer: &str) -> Result<Self, sqlx::Error> {
        migrate(&pool, backend, "analytics", MIGRATIONS).await?;
        let inbox = Inbox::new(pool.clone(), consumer).await?;
        Ok(Self { pool, inbox })
    }

    /// The pool, for readiness.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts the one transaction of a batch of facts and claims their event ids in it, with
    /// one multi-row inbox insert. Returns the transaction and, per id (same order), whether
    /// it was claimed: `false` for a fact seen before or repeated earlier in `event_ids`,
    /// which must not be counted again. Apply the claimed facts in offset order through the
    /// returned [`Aggregation`], then [`Aggregation::commit`]; dropping it instead rolls the
    /// whole batch back, inbox rows included.
    pub async fn begin_batch(
        &self,
        event_ids: &[&str],
    ) -> Result<(Aggregation, Vec<bool>), sqlx::Error> {
        let (tx, claimed) = self.inbox.begin_batch(event_ids).await?;
        let aggregation = Aggregation {
            tx,
            events: BTreeMap::new(),
            minutes: BTreeMap::new(),
            revenue: BTreeMap::new(),
            placed: BTreeMap::new(),
            outcomes: Vec::new(),
        };
        Ok((aggregation, claimed))
    }

    /// The aggregates, with the last `minutes` minutes of orders.
    pub async fn stats(&self, minutes: u32) -> Result<Stats, sqlx::Error> {
        let pairs = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
                .collect::<Result<BTreeMap<_, _>, sqlx::Error>>()
        };
        let events = pairs("SELECT event_type, events FROM event_counts").await?;
        let orders_by_status =
            pairs("SELECT status, COUNT(*) FROM order_facts GROUP BY status").await?;
        let revenue = sqlx::query("SELECT currency, total_minor, orders FROM revenue")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get(0)?,
                    Revenue {
                        total_minor: r.try_get(1)?,
                        orders: r.try_get(2)?,
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let mut orders_per_minute: Vec<Minute> = sqlx::query(
            "SELECT minute, orders FROM orders_per_minute ORDER BY minute DESC LIMIT $1",
        )
        .bind(i64::from(minutes))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Minute {
                minute: r.try_get(0)?,
                orders: r.try_get(1)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        orders_per_minute.reverse();
        let millis: Vec<i64> = sqlx::query("SELECT millis FROM time_to_outcome ORDER BY millis")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Stats {
            events,
            orders_by_status,
            revenue,
            orders_per_minute,
            time_to_outcome_ms: percentiles(&millis),
        })
    }
}

/// Nearest-rank percentiles of sorted values.
pub fn percentiles(sorted: &[i64]) -> Percentiles {
    let rank = |p: f64| {
        let n = sorted.len();
        (n > 0).then(|| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    Percentiles {
        count: sorted.len() as i64,
        p50: rank(0.50),
        p99: rank(0.99),
    }
}

/// The open transaction of a batch of facts. Facts are gathered as they are applied and
/// written at commit with a few multi-row statements per batch, not a few per fact (each
/// statement is a round trip to the database, on SQLite a hand-off to its worker thread):
/// the placements first, then the placement times the outcomes need (placements of the same
/// batch included), then the outcomes. The counters (facts per type, orders per minute,
/// revenue per currency) only add up, so they are summed in memory. Every table's rows are
/// written in key order, so that concurrent batches take rows in one order and never deadlock.
#[must_use = "dropping it rolls the whole batch back: commit it"]
pub struct Aggregation {
    tx: WriteTx,
    /// Facts per event type.
    events: BTreeMap<String, i64>,
    /// Orders placed per minute.
    minutes: BTreeMap<i64, i64>,
    /// Confirmed revenue per currency: (total in minor units, orders).
    revenue: BTreeMap<String, (i64, i64)>,
    /// Placements by order: (placed at, currency, total); a later one of an order wins, as
    /// its upsert would.
    placed: BTreeMap<String, (i64, String, i64)>,
    /// Outcomes in the order applied: (order, at, status).
    outcomes: Vec<(String, i64, &'static str)>,
}

/// Rows per multi-row statement: at most 5 columns, so 1,000 placeholders, far below
/// SQLite's and PostgreSQL's limits.
const ROW_CHUNK: usize = 200;

impl Aggregation {
    /// Applies one claimed fact of type `event_type`: counted now, written at
    /// [`Aggregation::commit`].
    pub fn apply(&mut self, event_type: &str, fact: &Fact) {
        *self.events.entry(event_type.to_owned()).or_default() += 1;
        match fact {
            Fact::Placed {
                order_id,
                at,
                currency,
                total_minor,
            } => {
                self.placed
                    .insert(order_id.clone(), (*at, currency.clone(), *total_minor));
                let minute = at - at.rem_euclid(60_000);
                *self.minutes.entry(minute).or_default() += 1;
            }
            Fact::Outcome {
                order_id,
                at,
                status,
                revenue,
            } => {
                self.outcomes.push((order_id.clone(), *at, status));
                if let Some((currency, total)) = revenue {
                    let sum = self.revenue.entry(currency.clone()).or_default();
                    sum.0 += total;
                    sum.1 += 1;
                }
            }
            Fact::Other => {}
        }
    }

    /// Writes the batch's facts and counters and commits. Returns, for each outcome of an
    /// order whose placement is known (stored or in this batch), the time from the placement
    /// to the outcome in milliseconds.
    pub async fn commit(mut self) -> Result<Vec<i64>, sqlx::Error> {
        let placed: Vec<_> = std::mem::take(&mut self.placed).into_iter().collect();
        for chunk in placed.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO order_facts (order_id, placed_at, status, currency, total_minor)
                 VALUES {}
                 ON CONFLICT (order_id) DO UPDATE SET placed_at = excluded.placed_at,
                     currency = excluded.currency, total_minor = excluded.total_minor",
                placeholder_rows(chunk.len(), 5)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (order_id, (at, currency, total)) in chunk {
                query = query
                    .bind(order_id.as_str())
                    .bind(*at)
                    .bind("PLACED")
                    .bind(currency.as_str())
                    .bind(*total);
            }
            query.execute(&mut *self.tx).await?;
        }
        let millis = self.write_outcomes().await?;
        self.write_counters().await?;
        self.tx.commit().await?;
        Ok(millis)
    }

    /// The outcomes: each order's last status, and its time to outcome (the first one
    /// recorded stays) when its placement is known.
    async fn write_outcomes(&mut self) -> Result<Vec<i64>, sqlx::Error> {
        let outcomes = std::mem::take(&mut self.outcomes);
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let orders: BTreeSet<&str> = outcomes.iter().map(|(id, _, _)| id.as_str()).collect();
        let orders: Vec<&str> = orders.into_iter().collect();
        let mut placed_at: HashMap<String, i64> = HashMap::with_capacity(orders.len());
        for chunk in orders.chunks(ROW_CHUNK) {
            let sql = format!(
                "SELECT order_id, placed_at FROM order_facts
                 WHERE placed_at IS NOT NULL AND order_id IN ({})",
                placeholder_list(1, chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for order_id in chunk {
                query = query.bind(*order_id);
            }
            for row in query.fetch_all(&mut *self.tx).await? {
                placed_at.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        let mut status: BTreeMap<&str, &str> = BTreeMap::new();
        let mut time_to_outcome: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
        let mut millis = Vec::new();
        for (order_id, at, outcome) in &outcomes {
            status.insert(order_id, outcome);
            if let Some(placed) = placed_at.get(order_id) {
                let ms = (at - placed).max(0);
                millis.push(ms);
                time_to_outcome.entry(order_id).or_insert((outcome, ms));
            }
        }
        let status: Vec<_> = status.into_iter().collect();
        for chunk in status.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO order_facts (order_id, status) VALUES {}
                 ON CONFLICT (order_id) DO UPDATE SET status = excluded.status",
                placeholder_rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (order_id, outcome) in chunk {
                query = query.bind(*order_id).bind(*outcome);
            }
            query.execute(&mut *self.tx).await?;
        }
        let times: Vec<_> = time_to_outcome.into_iter().collect();
        for chunk in times.chunks(ROW_CHUNK) {
            let sql = format!(
                "INSERT INTO time_to_outcome (order_id, outcome, millis) VALUES {}
                 ON CONFLICT (order_id) DO NOTHING",
                placeholder_rows(chunk.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (order_id, (outcome, ms)) in chunk {
                query = query.bind(*order_id).bind(*outcome).bind(*ms);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(millis)
    }

    /// The summed counters, one statement per table (per chunk of rows).
    async fn write_counters(&mut self) -> Result<(), sqlx::Error> {
        let events: Vec<_> = std::mem::take(&mut self.events).into_iter().collect();
        for chunk in events.chunks(COUNTER_CHUNK) {
            let sql = format!(
                "INSERT INTO event_counts (event_type, events) VALUES {}
                 ON CONFLICT (event_type) DO UPDATE SET events = event_counts.events + excluded.events",
                placeholder_rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (event_type, n) in chunk {
                query = query.bind(event_type.as_str()).bind(*n);
            }
            query.execute(&mut *self.tx).await?;
        }
        let minutes: Vec<_> = std::mem::take(&mut self.minutes).into_iter().collect();
        for chunk in minutes.chunks(COUNTER_CHUNK) {
            let sql = format!(
                "INSERT INTO orders_per_minute (minute, orders) VALUES {}
                 ON CONFLICT (minute) DO UPDATE SET orders = orders_per_minute.orders + excluded.orders",
                placeholder_rows(chunk.len(), 2)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (minute, n) in chunk {
                query = query.bind(*minute).bind(*n);
            }
            query.execute(&mut *self.tx).await?;
        }
        let revenue: Vec<_> = std::mem::take(&mut self.revenue).into_iter().collect();
        for chunk in revenue.chunks(COUNTER_CHUNK) {
            let sql = format!(
                "INSERT INTO revenue (currency, total_minor, orders) VALUES {}
                 ON CONFLICT (currency) DO UPDATE
                 SET total_minor = revenue.total_minor + excluded.total_minor,
                     orders = revenue.orders + excluded.orders",
                placeholder_rows(chunk.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(in_order(&self.tx, sql)));
            for (currency, (total, orders)) in chunk {
                query = query.bind(currency.as_str()).bind(*total).bind(*orders);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<i64> = (1..=100).collect();
        let p = percentiles(&values);
        assert_eq!((p.count, p.p50, p.p99), (100, Some(50), Some(99)));
        assert_eq!(percentiles(&[7]).p99, Some(7));
        assert_eq!(percentiles(&[]).p50, None);
    }
}
