//! The batch path, called directly (no broker): one transaction per batch, fresh events only,
//! records of one batch applied as they would be one after another, a short order taking
//! nothing while the others are reserved, units released in a batch serving the orders after
//! the release, and a batch with an unreadable record applying nothing.

use opentelemetry::trace::{TraceContextExt, TraceId};
use spine_events::Event;
use spine_events::inventory::{StockReservationFailed, StockReserved};
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected};
use spine_inventory::domain::{Quantity, Sku};
use spine_inventory::reactions::OrderReactions;
use spine_inventory::store::InventoryStore;
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};
use spine_kit::kafka::{Headers, OutgoingRecord};
use spine_kit::outbox::Outbox;
use spine_kit::testing::{TestDatabase, fresh_database};
use sqlx::{AnyPool, Row};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

use crate::support::placed;

spine_kit::on_sqlite_and_postgres!(
    a_batch_applies_only_the_events_not_processed_before,
    a_short_order_in_a_batch_is_undone_alone_and_the_others_reserved,
    the_facts_of_one_order_in_a_batch_act_as_one_after_another,
    a_batch_with_an_unreadable_record_is_poison_and_applies_nothing,
    each_fact_of_a_batch_carries_its_own_records_trace,
    units_released_in_a_batch_serve_the_orders_after_it_and_not_before,
);

/// The store and handler on a fresh database holding A: 10, B: 10, C: 1.
struct Fixture {
    reactions: OrderReactions,
    pool: AnyPool,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let outbox = Outbox::new(pool.clone(), backend).await.unwrap();
    let store = InventoryStore::new(outbox, "inventory-batches")
        .await
        .unwrap();
    let seed: Vec<(Sku, Quantity)> = [("A", 10), ("B", 10), ("C", 1)]
        .into_iter()
        .map(|(sku, n)| (Sku::parse(sku).unwrap(), Quantity::parse(n).unwrap()))
        .collect();
    store.seed(&seed).await.unwrap();
    Fixture {
        reactions: OrderReactions::new(store),
        pool,
        _db: db,
    }
}

/// A record of `event` at `offset`, as the runner hands it over.
fn record<E: Event>(offset: i64, event: &E) -> Record {
    let outgoing = OutgoingRecord::from_event(event).unwrap();
    Record {
        topic: "orders.events".into(),
        partition: 0,
        offset,
        key: outgoing.key,
        payload: Some(outgoing.payload),
        headers: outgoing.headers,
        timestamp_ms: None,
        attempt: 1,
    }
}

fn items(records: Vec<Record>) -> Vec<(Record, tracing::Span)> {
    records
        .into_iter()
        .map(|r| (r, tracing::Span::none()))
        .collect()
}

/// A fact enqueued in the outbox, decoded, with its headers.
struct Enqueued {
    event_type: String,
    payload: Vec<u8>,
    headers: Headers,
}

impl Fixture {
    async fn handle(&self, records: Vec<Record>) -> Result<(), HandlerError> {
        let items = items(records);
        self.reactions.handle_batch(&Batch::new(&items)).await
    }

    async fn available(&self, sku: &str) -> i64 {
        sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Every outbox row, in the order written.
    async fn outbox(&self) -> Vec<Enqueued> {
        sqlx::query("SELECT payload, headers FROM spine_outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                let headers = Headers::from_bytes(&row.get::<Vec<u8>, _>(1)).unwrap();
                Enqueued {
                    event_type: headers.get_str("event-type").unwrap().to_owned(),
                    payload: row.get(0),
                    headers,
                }
            })
            .collect()
    }
}

fn order(lines: &[(&str, i32)]) -> OrderPlaced {
    placed(
        lines
            .iter()
            .map(|(sku, n)| LineItem::new(*sku, *n, 100))
            .collect(),
    )
}

async fn a_batch_applies_only_the_events_not_processed_before(backend: Backend) {
    let app = fixture(backend).await;
    let first = order(&[("A", 2)]);
    let second = order(&[("A", 3), ("B", 1)]);
    app.handle(vec![record(0, &first)]).await.unwrap();

    // Redelivered with a fresh one, and the fresh one twice in the same batch.
    app.handle(vec![
        record(0, &first),
        record(1, &second),
        record(2, &second),
    ])
    .await
    .unwrap();

    assert_eq!(
        app.available("A").await,
        5,
        "2 for the first, 3 for the second"
    );
    assert_eq!(app.available("B").await, 9);
    assert_eq!(app.count("SELECT COUNT(*) FROM spine_inbox").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM reservations").await, 3);
    let facts = app.outbox().await;
    assert_eq!(facts.len(), 2, "one StockReserved per order");
    let reserved: StockReserved = spine_events::decode(&facts[1].payload).unwrap();
    assert_eq!(reserved.order_id, second.order_id);
    assert_eq!(reserved.lines.len(), 2);
}

async fn a_short_order_in_a_batch_is_undone_alone_and_the_others_reserved(backend: Backend) {
    let app = fixture(backend).await;
    let first = order(&[("A", 2), ("B", 1)]);
    // A has enough for the short order, C does not: it must take none of A either.
    let short = order(&[("A", 3), ("C", 5)]);
    let third = order(&[("A", 1)]);

    app.handle(vec![
        record(0, &first),
        record(1, &short),
        record(2, &third),
    ])
    .await
    .unwrap();

    assert_eq!(
        app.available("A").await,
        7,
        "2 for the first, 1 for the third"
    );
    assert_eq!(app.available("B").await, 9);
    assert_eq!(app.available("C").await, 1, "untouched");
    let short_rows = app
        .count(&format!(
            "SELECT COUNT(*) FROM reservations WHERE order_id = '{}'",
            short.order_id
        ))
        .await;
    assert_eq!(short_rows, 0, "nothing reserved for the short order");
    assert_eq!(app.count("SELECT COUNT(*) FROM reservations").await, 3);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM spine_inbox").await,
        3,
        "every event is recorded, the failed one too"
    );
    let facts = app.outbox().await;
    let types: Vec<&str> = facts.iter().map(|f| f.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            StockReserved::NAME,
            StockReservationFailed::NAME,
            StockReserved::NAME
        ],
        "one fact per order, in offset order"
    );
    let failed: StockReservationFailed = spine_events::decode(&facts[1].payload).unwrap();
    assert_eq!(failed.order_id, short.order_id);
    assert_eq!(failed.short_skus, ["C"]);
    assert_eq!(failed.reason, "insufficient stock");
}

/// An OrderRejected for `order` after its stock could have been reserved (payment declined).
fn rejection(order: &OrderPlaced) -> OrderRejected {
    OrderRejected {
        event_id: Uuid::now_v7(),
        occurred_at: order.occurred_at,
        order_id: order.order_id,
        email: order.email.clone(),
        reason: "payment declined".into(),
    }
}

async fn the_facts_of_one_order_in_a_batch_act_as_one_after_another(backend: Backend) {
    let app = fixture(backend).await;
    let first = order(&[("A", 3)]);
    // Another OrderPlaced for the same order (a new event id): the order already holds stock.
    let again = OrderPlaced {
        event_id: Uuid::now_v7(),
        ..first.clone()
    };
    let rejected = rejection(&first);
    let rejected_again = OrderRejected {
        event_id: Uuid::now_v7(),
        ..rejected.clone()
    };
    let confirmed = OrderConfirmed::of(&first); // not inventory's to handle

    app.handle(vec![
        record(0, &first),
        record(1, &again),
        record(2, &confirmed),
        record(3, &rejected),
        record(4, &rejected_again),
    ])
    .await
    .unwrap();

    assert_eq!(app.available("A").await, 10, "reserved, then released once");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM reservations WHERE status = 'RELEASED'")
            .await,
        1
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM reservations").await, 1);
    let facts = app.outbox().await;
    assert_eq!(facts.len(), 1, "one StockReserved, nothing for the rest");
    assert_eq!(facts[0].event_type, StockReserved::NAME);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM spine_inbox").await,
        4,
        "inventory's four events; OrderConfirmed is not recorded"
    );
}

async fn units_released_in_a_batch_serve_the_orders_after_it_and_not_before(backend: Backend) {
    let app = fixture(backend).await;
    // A previous batch reserved all of A.
    let holder = order(&[("A", 10)]);
    app.handle(vec![record(0, &holder)]).await.unwrap();
    assert_eq!(app.available("A").await, 0);
    let before = order(&[("A", 4)]);
    let rejected = rejection(&holder);
    let after = order(&[("A", 6), ("B", 10)]);
    let too_many = order(&[("A", 5)]);

    app.handle(vec![
        record(1, &before),
        record(2, &rejected),
        record(3, &after),
        record(4, &too_many),
    ])
    .await
    .unwrap();

    assert_eq!(app.available("A").await, 4, "10 released, then 6 taken");
    assert_eq!(app.available("B").await, 0);
    let status = |id: Uuid| {
        format!("SELECT COUNT(*) FROM reservations WHERE order_id = '{id}' AND status = 'RELEASED'")
    };
    assert_eq!(app.count(&status(holder.order_id)).await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM reservations WHERE status = 'RESERVED'")
            .await,
        2,
        "the two lines of the order after the release"
    );
    let facts = app.outbox().await;
    let types: Vec<&str> = facts.iter().map(|f| f.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            StockReserved::NAME,
            StockReservationFailed::NAME,
            StockReserved::NAME,
            StockReservationFailed::NAME
        ],
        "the first batch's fact, then one per order in offset order"
    );
}

async fn a_batch_with_an_unreadable_record_is_poison_and_applies_nothing(backend: Backend) {
    let app = fixture(backend).await;
    let good = order(&[("A", 2)]);
    let mut garbage = record(1, &order(&[("B", 1)]));
    garbage.payload = Some(b"definitely not avro".to_vec());
    let later = order(&[("B", 4)]);
    let batch = vec![record(0, &good), garbage.clone(), record(2, &later)];

    let err = app.handle(batch.clone()).await.unwrap_err();

    assert!(matches!(err, HandlerError::Poison(_)), "{err}");
    assert_eq!(app.available("A").await, 10);
    assert_eq!(app.available("B").await, 10);
    assert_eq!(app.count("SELECT COUNT(*) FROM spine_inbox").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM reservations").await, 0);
    assert!(app.outbox().await.is_empty(), "no fact enqueued");

    // What the runner does next: each record alone. The good ones apply once, the garbage
    // stays poison.
    let mut outcomes = Vec::new();
    for record in batch {
        outcomes.push(app.handle(vec![record]).await);
    }
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    assert!(matches!(outcomes[1], Err(HandlerError::Poison(_))));
    assert_eq!(app.available("A").await, 8);
    assert_eq!(app.available("B").await, 6);
    assert_eq!(app.outbox().await.len(), 2);
}

async fn each_fact_of_a_batch_carries_its_own_records_trace(backend: Backend) {
    let app = fixture(backend).await;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(
            opentelemetry::trace::TracerProvider::tracer(&provider, "test"),
        ));
    let _default = tracing::subscriber::set_default(subscriber);
    let orders = [order(&[("A", 1)]), order(&[("C", 5)]), order(&[("B", 1)])];
    let items: Vec<(Record, tracing::Span)> = orders
        .iter()
        .enumerate()
        .map(|(offset, o)| {
            let span = tracing::info_span!("process orders.events");
            (record(offset as i64, o), span)
        })
        .collect();
    let trace_ids: Vec<TraceId> = items
        .iter()
        .map(|(_, span)| span.context().span().span_context().trace_id())
        .collect();

    app.reactions
        .handle_batch(&Batch::new(&items))
        .await
        .unwrap();

    let facts = app.outbox().await;
    assert_eq!(facts.len(), 3);
    for (fact, trace_id) in facts.iter().zip(&trace_ids) {
        let traceparent = fact.headers.get_str("traceparent").expect("a traceparent");
        assert!(
            traceparent.contains(&trace_id.to_string()),
            "{} has {traceparent}, not its record's trace {trace_id}",
            fact.event_type
        );
    }
    assert_ne!(trace_ids[0], trace_ids[1], "three records, three traces");
}

/// PostgreSQL only (SQLite has one writer): a batch locks every stock row it may change in
/// SKU order before changing any, so it never holds one SKU while waiting for another that a
/// concurrent batch (another partition) may hold, which would deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "PostgreSQL has no write gate; the test holds row locks as another partition"
)]
async fn a_batch_locks_its_stock_in_sku_order_before_changing_any() {
    let app = fixture(Backend::Postgres).await;
    // Another partition's batch holds A.
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT sku FROM stock WHERE sku = 'A' FOR UPDATE")
        .fetch_all(&mut *holder)
        .await
        .unwrap();
    // B first by offset, then A: taken one order after the other, B would be held while
    // waiting for A.
    let batch = vec![
        record(0, &order(&[("B", 1)])),
        record(1, &order(&[("A", 1)])),
    ];

    let (handled, b_was_free) = tokio::join!(app.handle(batch), async {
        let waiting = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&app.pool)
            .await
            .unwrap()
                > 0
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !waiting().await {
            assert!(
                std::time::Instant::now() < deadline,
                "the batch waits for A"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut probe = app.pool.begin().await.unwrap();
        let b_was_free = sqlx::query("SELECT sku FROM stock WHERE sku = 'B' FOR UPDATE NOWAIT")
            .fetch_all(&mut *probe)
            .await
            .is_ok();
        drop(probe);
        holder.commit().await.unwrap();
        b_was_free
    });

    assert!(b_was_free, "the batch held B while it waited for A");
    handled.unwrap();
    assert_eq!(app.available("A").await, 9);
    assert_eq!(app.available("B").await, 9);
}
