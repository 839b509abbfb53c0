//! Group commit of new orders on SQLite.
//!
//! SQLite has one writer per database, and each of its commits is an fsync. A POST saving its
//! order in a transaction of its own makes six round trips to its connection's worker thread
//! (`BEGIN`, the order, its lines, its first status, its outbox row, `COMMIT`), each of which
//! waits for the scheduler on a busy machine, and then queues for the write lock behind the
//! other requests. Under a spike that wait was most of a POST's latency.
//!
//! So on SQLite one task, the [`Placer`], writes every new order: it takes the orders that are
//! waiting (up to [`MAX_BATCH`]), writes them all in one transaction with one multi-row insert
//! per table, commits once, and answers each request. At a low rate that is one order at a
//! time, the same statements as before; under load, the orders that arrived during one commit
//! share the next. A request is answered only after its order is committed, so a 202 still
//! means saved.
//!
//! A batch that fails on a statement (an idempotency key taken meanwhile, say) is rolled back
//! and its orders are written again one by one, so each gets its own answer; one that fails
//! because the database is unavailable fails every order in it, as each would have failed
//! alone. PostgreSQL runs many writers at once and keeps one transaction per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use spine_kit::db::{in_order, is_outage, placeholder_rows};
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::insert_transition;
use crate::domain::{NewOrder, OrderStatus};

/// The most orders one transaction writes.
pub const MAX_BATCH: usize = 64;

/// Orders waiting for the writer, beyond which `place` waits to hand its order over.
const QUEUE: usize = 1024;

/// Rows per multi-row statement: at most 11 parameters a row, under SQLite's 32,766. (A
/// batch's lines, up to 100 an order, are split into statements of this many.)
const ROWS_PER_STATEMENT: usize = 1000;
const _: () = assert!(ROWS_PER_STATEMENT * 11 < 32_766);

/// A new order's rows, ready to write.
pub(crate) struct NewRow {
    pub(crate) id: Uuid,
    pub(crate) order: NewOrder,
    /// The canonical request, kept for idempotency-key comparison.
    pub(crate) request: String,
    pub(crate) idempotency_key: Option<String>,
    /// OrderPlaced, encoded in the request's span (it carries that trace context).
    pub(crate) record: OutgoingRecord,
    pub(crate) now: i64,
}

struct Job {
    row: NewRow,
    done: oneshot::Sender<Result<(), sqlx::Error>>,
}

/// The handle of the writer task of new orders. Cheap to clone; the task stops when the last
/// handle is dropped, after writing what it was given.
#[derive(Clone)]
pub(crate) struct Placer {
    jobs: mpsc::Sender<Job>,
    /// Orders committed in a transaction shared with others (for the tests; the
    /// `orders_place_batch_size` histogram is the metric).
    #[cfg_attr(not(test), allow(dead_code))]
    shared: Arc<AtomicU64>,
}

impl Placer {
    /// Starts the writer on the current runtime.
    pub(crate) fn spawn(outbox: Outbox) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let shared = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(outbox, queue, Arc::clone(&shared)));
        Self { jobs, shared }
    }

    /// How many orders were committed in a transaction shared with others.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }

    /// Writes `row` (with others) and returns once it is committed, or with the error that
    /// kept it from being committed.
    pub(crate) async fn write(&self, row: NewRow) -> Result<(), sqlx::Error> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job { row, done })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // The writer answers every job it takes; a writer that is gone is an outage.
        answer.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

async fn run(outbox: Outbox, mut queue: mpsc::Receiver<Job>, shared: Arc<AtomicU64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        metrics::histogram!("orders_place_batch_size").record(batch.len() as f64);
        if batch.len() > 1 {
            let rows: Vec<&NewRow> = batch.iter().map(|job| &job.row).collect();
            match write_many(&outbox, &rows).await {
                Ok(()) => {
                    shared.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for job in batch.drain(..) {
                        let _ = job.done.send(Ok(()));
                    }
                    continue;
                }
                Err(err) if is_outage(&err) => {
                    // Each would have failed alone: every request gets the outage (a 503),
                    // as an I/O error, which is classified as one (sqlx::Error isn't Clone).
                    tracing::warn!(error = %err, orders = batch.len(), "the database failed a batch of new orders");
                    for job in batch.drain(..) {
                        let err = std::io::Error::other(format!("saving the order: {err}"));
                        let _ = job.done.send(Err(sqlx::Error::Io(err)));
                    }
                    continue;
                }
                Err(err) => {
                    tracing::debug!(error = %err, orders = batch.len(), "a batch of new orders failed; writing them one by one");
                }
            }
        }
        for job in batch.drain(..) {
            let result = write_one(&outbox, &job.row).await;
            let _ = job.done.send(result);
        }
    }
}

/// One order in a transaction of its own.
pub(crate) async fn write_one(outbox: &Outbox, row: &NewRow) -> Result<(), sqlx::Error> {
    let mut tx = outbox.begin().await?;
    let written = insert_rows(&mut tx, outbox, &[row]).await;
    match written {
        Ok(()) => {
            tx.commit().await?;
            outbox.committed(1);
            Ok(())
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Many orders in one transaction.
async fn write_many(outbox: &Outbox, rows: &[&NewRow]) -> Result<(), sqlx::Error> {
    let mut tx = outbox.begin().await?;
    match insert_rows(&mut tx, outbox, rows).await {
        Ok(()) => {
            tx.commit().await?;
            outbox.committed(i64::try_from(rows.len()).unwrap_or(i64::MAX));
            Ok(())
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// The rows of `rows`' orders: the orders, their lines, their first status and their
/// OrderPlaced, one multi-row insert per table (one statement each for a single order).
async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    outbox: &Outbox,
    rows: &[&NewRow],
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO orders (id, customer_id, email, currency, total_minor, sales_channel, status,
                                 idempotency_key, request, created_at, updated_at)
             VALUES {}",
            placeholder_rows(chunk.len(), 11)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(in_order(conn, sql)));
        for row in chunk {
            let order = &row.order;
            query = query
                .bind(row.id.to_string())
                .bind(order.customer_id.as_str())
                .bind(order.email.as_str())
                .bind(order.currency.as_str())
                .bind(order.total_minor)
                .bind(order.sales_channel.clone())
                .bind(OrderStatus::Pending.as_str())
                .bind(row.idempotency_key.clone())
                .bind(row.request.as_str())
                .bind(row.now)
                .bind(row.now);
        }
        query.execute(&mut *conn).await?;
    }
    let lines: Vec<(&NewRow, usize)> = rows
        .iter()
        .flat_map(|row| (0..row.order.items.len()).map(move |line| (*row, line)))
        .collect();
    for chunk in lines.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO order_items (order_id, line_no, sku, quantity, unit_price_minor) VALUES {}",
            placeholder_rows(chunk.len(), 5)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(in_order(conn, sql)));
        for (row, line_no) in chunk {
            let item = &row.order.items[*line_no];
            query = query
                .bind(row.id.to_string())
                .bind(i32::try_from(*line_no).unwrap_or(i32::MAX))
                .bind(item.sku.as_str())
                .bind(item.quantity)
                .bind(item.unit_price_minor);
        }
        query.execute(&mut *conn).await?;
    }
    if let [row] = rows {
        insert_transition(conn, row.id, OrderStatus::Pending, None, row.now).await?;
    } else {
        // A new order has no history yet: its first transition is 1.
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO order_transitions (order_id, seq, status, reason, at) VALUES {}",
                placeholder_rows(chunk.len(), 5)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(in_order(conn, sql)));
            for row in chunk {
                query = query
                    .bind(row.id.to_string())
                    .bind(1_i32)
                    .bind(OrderStatus::Pending.as_str())
                    .bind(None::<String>)
                    .bind(row.now);
            }
            query.execute(&mut *conn).await?;
        }
    }
    let records: Vec<&OutgoingRecord> = rows.iter().map(|row| &row.record).collect();
    outbox.enqueue_many(conn, &records).await
}

#[cfg(test)]
mod tests {
    use spine_kit::db::Backend;
    use spine_kit::settings::DatabaseSettings;

    use super::*;
    use crate::store::{OrderStore, Placed};

    async fn sqlite_store(dir: &tempfile::TempDir) -> OrderStore {
        let settings = DatabaseSettings {
            url: format!("sqlite://{}/orders.db?mode=rwc", dir.path().display()).into(),
            ..DatabaseSettings::default()
        };
        let (pool, backend) = spine_kit::db::connect(&settings).await.unwrap();
        assert_eq!(backend, Backend::Sqlite);
        let outbox = Outbox::new(pool, backend).await.unwrap();
        OrderStore::new(outbox, "orders").await.unwrap()
    }

    fn order(lines: usize) -> NewOrder {
        let items = (0..lines)
            .map(|line| spine_events::orders::LineItem::new(format!("SKU-{line}"), 2, 150))
            .collect();
        NewOrder {
            customer_id: "c-1".into(),
            email: "a@example.com".into(),
            currency: "EUR".into(),
            items,
            total_minor: 300 * lines as i64,
            sales_channel: None,
        }
    }

    async fn count(store: &OrderStore, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(store.outbox().pool())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_orders_share_commits_and_each_is_saved_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        // 200 at once, with 1 to 3 lines; every fourth pair shares an idempotency key.
        let placed = futures::future::join_all((0..200).map(|n| {
            let store = store.clone();
            async move {
                let key = (n % 4 == 0).then(|| format!("key-{}", n / 8));
                let order = order(1 + n % 3);
                let request = format!("request-{}", n / 8);
                store.place(&order, &request, key.as_deref()).await
            }
        }))
        .await;
        let mut created = 0;
        let mut existing = 0;
        for result in placed {
            match result.unwrap() {
                Placed::Created { .. } => created += 1,
                Placed::Existing { .. } => existing += 1,
                Placed::KeyReused => panic!("same body, same key"),
            }
        }
        // 50 keyed requests under 25 keys: one order per key.
        assert_eq!((created, existing), (175, 25));
        let placer = store.placer.as_ref().expect("SQLite groups commits");
        assert!(placer.shared() > 0, "no order shared a commit");
        assert_eq!(count(&store, "orders").await, 175);
        assert_eq!(count(&store, "order_transitions").await, 175);
        assert_eq!(count(&store, "spine_outbox").await, 175);
        let lines: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM order_items i JOIN orders o ON o.id = i.order_id",
        )
        .fetch_one(store.outbox().pool())
        .await
        .unwrap();
        let expected: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(CASE WHEN total_minor = 300 THEN 1 WHEN total_minor = 600 THEN 2 ELSE 3 END), 0) FROM orders",
        )
        .fetch_one(store.outbox().pool())
        .await
        .unwrap();
        assert_eq!(lines, expected, "every order has all its lines");
        // Every order is whole: its lines in order, one PENDING transition, its fact.
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM orders")
            .fetch_all(store.outbox().pool())
            .await
            .unwrap();
        for id in ids {
            let view = store.get(id.parse().unwrap()).await.unwrap().unwrap();
            assert_eq!(view.history.len(), 1);
            assert_eq!(view.total_minor, 300 * view.items.len() as i64);
        }
    }
}
