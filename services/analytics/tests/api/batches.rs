//! The batch path, called directly (no broker): one transaction per batch, fresh facts only,
//! a batch aggregating exactly as its records would one at a time, and a batch with an
//! unreadable record applying nothing.

use spine_analytics::reactions::Aggregator;
use spine_analytics::store::{AnalyticsStore, Stats};
use spine_events::Event;
use spine_events::inventory::StockReserved;
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected};
use spine_kit::db::Backend;
use spine_kit::kafka::OutgoingRecord;
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};
use spine_kit::testing::{TestDatabase, fresh_database};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

spine_kit::on_sqlite_and_postgres!(
    a_batch_counts_only_the_facts_not_seen_before,
    a_batch_aggregates_as_its_records_would_one_at_a_time,
    a_batch_with_an_unreadable_record_is_poison_and_applies_nothing,
);

struct Fixture {
    aggregator: Aggregator,
    store: AnalyticsStore,
    pool: AnyPool,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let store = AnalyticsStore::new(pool.clone(), backend, "analytics-batches")
        .await
        .unwrap();
    Fixture {
        aggregator: Aggregator::new(store.clone()),
        store,
        pool,
        _db: db,
    }
}

impl Fixture {
    async fn handle(&self, records: &[Record]) -> Result<(), HandlerError> {
        let items: Vec<(Record, tracing::Span)> = records
            .iter()
            .map(|r| (r.clone(), tracing::Span::none()))
            .collect();
        self.aggregator.handle_batch(&Batch::new(&items)).await
    }

    async fn stats(&self) -> Stats {
        self.store.stats(60).await.unwrap()
    }

    /// `order_facts` and `time_to_outcome`, as sorted text rows.
    async fn order_rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = sqlx::query(
            "SELECT f.order_id, f.placed_at, f.status, f.currency, f.total_minor, t.outcome, t.millis
             FROM order_facts f LEFT JOIN time_to_outcome t ON t.order_id = f.order_id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {} {:?} {:?} {:?} {:?}",
                r.get::<String, _>(0),
                r.get::<Option<i64>, _>(1),
                r.get::<String, _>(2),
                r.get::<Option<String>, _>(3),
                r.get::<Option<i64>, _>(4),
                r.get::<Option<String>, _>(5),
                r.get::<Option<i64>, _>(6),
            )
        })
        .collect();
        rows.sort();
        rows
    }

    async fn inbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM spine_inbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

fn record<E: Event>(offset: i64, event: &E) -> Record {
    let outgoing = OutgoingRecord::from_event(event).unwrap();
    Record {
        topic: E::TOPIC.into(),
        partition: 0,
        offset,
        key: outgoing.key,
        payload: Some(outgoing.payload),
        headers: outgoing.headers,
        timestamp_ms: None,
        attempt: 1,
    }
}

/// An order placed `at` (Unix ms) for `total` minor units of `currency`.
fn placed(at: i64, currency: &str, total: i64) -> OrderPlaced {
    let mut order = OrderPlaced::new(
        Uuid::now_v7(),
        "customer",
        "ada@example.com",
        vec![LineItem::new("SKU-1", 1, total)],
        currency,
    );
    order.occurred_at = at;
    order
}

fn confirmed(order: &OrderPlaced, after_ms: i64) -> OrderConfirmed {
    let mut confirmed = OrderConfirmed::of(order);
    confirmed.occurred_at = order.occurred_at + after_ms;
    confirmed
}

fn rejected(order: &OrderPlaced, after_ms: i64) -> OrderRejected {
    OrderRejected {
        event_id: Uuid::now_v7(),
        occurred_at: order.occurred_at + after_ms,
        order_id: order.order_id,
        email: order.email.clone(),
        reason: "out of stock".into(),
    }
}

/// A fixed minute, so the test's orders fall in two known minutes.
const T0: i64 = 1_790_000_040_000;

/// A varied stream: placements over two minutes and two currencies, outcomes in the same
/// batch as their placement and in a later one, a duplicate of a fact in the same batch and
/// of one from an earlier batch, a fact of another topic, and an outcome of an order never
/// placed.
fn stream() -> Vec<Record> {
    let a = placed(T0, "EUR", 1500);
    let b = placed(T0 + 10_000, "EUR", 700);
    let c = placed(T0 + 65_000, "USD", 300);
    let d = placed(T0 + 70_000, "EUR", 200);
    let never_placed = placed(T0, "EUR", 999);
    let mut records = vec![
        record(0, &a),
        record(0, &b),
        record(0, &confirmed(&a, 1_500)),
        record(0, &rejected(&b, 250)),
    ];
    records.push(records[2].clone()); // the confirmation delivered twice
    records.push(record(0, &c));
    records.push(record(0, &StockReserved::new(c.order_id, vec![])));
    records.push(record(0, &confirmed(&c, 40)));
    records.push(records[0].clone()); // a's placement redelivered much later
    records.push(record(0, &d));
    records.push(record(0, &confirmed(&never_placed, 10)));
    records.push(record(0, &confirmed(&d, 5)));
    for (offset, record) in records.iter_mut().enumerate() {
        record.offset = offset as i64;
    }
    records
}

async fn a_batch_counts_only_the_facts_not_seen_before(backend: Backend) {
    let app = fixture(backend).await;
    let a = placed(T0, "EUR", 1500);
    let b = placed(T0 + 1_000, "EUR", 500);
    app.handle(&[record(0, &a)]).await.unwrap();

    let confirmation = record(2, &confirmed(&a, 100));

    app.handle(&[
        record(0, &a),        // counted in the earlier batch
        record(1, &b),        // fresh
        confirmation.clone(), // fresh
        confirmation.clone(), // the same event again, in the same batch
    ])
    .await
    .unwrap();
    app.handle(&[confirmation]).await.unwrap(); // and once more, later

    let stats = app.stats().await;
    assert_eq!(stats.events["OrderPlaced"], 2, "a once, b once");
    assert_eq!(
        stats.events["OrderConfirmed"], 1,
        "delivered three times, counted once"
    );
    assert_eq!(stats.revenue["EUR"].orders, 1);
    assert_eq!(stats.revenue["EUR"].total_minor, 1500);
    assert_eq!(stats.orders_per_minute.len(), 1);
    assert_eq!(stats.orders_per_minute[0].orders, 2);
    assert_eq!(stats.time_to_outcome_ms.count, 1);
    assert_eq!(stats.time_to_outcome_ms.p50, Some(100));
    assert_eq!(app.inbox_rows().await, 3);
}

async fn a_batch_aggregates_as_its_records_would_one_at_a_time(backend: Backend) {
    let batched = fixture(backend).await;
    let alone = fixture(backend).await;
    let records = stream();

    // One batch for the first half, another for the rest: the second meets facts of the first.
    let (first, rest) = records.split_at(6);
    batched.handle(first).await.unwrap();
    batched.handle(rest).await.unwrap();
    for record in &records {
        alone.handle(std::slice::from_ref(record)).await.unwrap();
    }

    let stats = batched.stats().await;
    assert_eq!(stats, alone.stats().await);
    assert_eq!(batched.order_rows().await, alone.order_rows().await);
    assert_eq!(batched.inbox_rows().await, alone.inbox_rows().await);
    // And what that is, so that two equally wrong paths cannot pass.
    assert_eq!(stats.events["OrderPlaced"], 4);
    assert_eq!(stats.events["OrderConfirmed"], 4);
    assert_eq!(stats.events["OrderRejected"], 1);
    assert_eq!(stats.events["StockReserved"], 1);
    assert_eq!(
        stats.revenue["EUR"].orders, 3,
        "a, d and the order never placed"
    );
    assert_eq!(stats.revenue["EUR"].total_minor, 1500 + 200 + 999);
    assert_eq!(stats.revenue["USD"].orders, 1);
    let minutes: Vec<(i64, i64)> = stats
        .orders_per_minute
        .iter()
        .map(|m| (m.minute, m.orders))
        .collect();
    assert_eq!(minutes, [(T0, 2), (T0 + 60_000, 2)]);
    assert_eq!(stats.time_to_outcome_ms.count, 4, "a, b, c and d");
    assert_eq!(stats.orders_by_status["CONFIRMED"], 4);
    assert_eq!(stats.orders_by_status["REJECTED"], 1);
}

async fn a_batch_with_an_unreadable_record_is_poison_and_applies_nothing(backend: Backend) {
    let app = fixture(backend).await;
    let a = placed(T0, "EUR", 100);
    let mut garbage = record(1, &placed(T0, "EUR", 100));
    garbage.payload = Some(b"definitely not avro".to_vec());
    let batch = [record(0, &a), garbage, record(2, &confirmed(&a, 10))];

    let err = app.handle(&batch).await.unwrap_err();

    assert!(matches!(err, HandlerError::Poison(_)), "{err}");
    assert_eq!(app.inbox_rows().await, 0);
    let stats = app.stats().await;
    assert!(stats.events.is_empty(), "{stats:?}");
    assert!(app.order_rows().await.is_empty());

    // What the runner does next: each record alone; the readable ones count once.
    for record in &batch {
        let _ = app.handle(std::slice::from_ref(record)).await;
    }
    let stats = app.stats().await;
    assert_eq!(stats.events["OrderPlaced"], 1);
    assert_eq!(stats.events["OrderConfirmed"], 1);
    assert_eq!(stats.revenue["EUR"].orders, 1);
}
