//! The batch handler of inventory's facts, called directly with multi-record batches (the
//! runner may hand it any run of a partition's records): one transaction per batch, facts
//! processed before skipped, records of one order applied as they would be one after another,
//! and all or nothing when a record cannot be applied.

use spine_events::Event;
use spine_events::inventory::{ReservedLine, StockReservationFailed, StockReserved};
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};
use spine_kit::kafka::{Headers, OutgoingRecord};
use spine_kit::outbox::Outbox;
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use spine_orders::domain::{NewOrder, OrderRequest, OrderStatus};
use spine_orders::reactions::InventoryReactions;
use spine_orders::store::{OrderStore, Placed};
use sqlx::AnyPool;
use tracing::Span;
use uuid::Uuid;

use crate::support::order_body;

spine_kit::on_sqlite_and_postgres!(
    a_fact_processed_before_is_skipped_and_the_fresh_one_in_its_batch_applied,
    a_reservation_and_a_failure_in_one_batch_confirm_one_order_and_reject_the_other,
    two_facts_of_one_order_in_a_batch_apply_as_they_would_one_after_another,
    an_undecodable_record_fails_its_batch_as_poison_and_nothing_is_applied,
    a_fact_for_an_unknown_order_fails_its_batch_as_poison_and_nothing_is_applied,
    each_fact_enqueued_by_a_batch_carries_its_own_records_trace,
);

/// The handler over a fresh database, with no broker: what the runner would call.
struct Fixture {
    reactions: InventoryReactions,
    store: OrderStore,
    pool: AnyPool,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let outbox = Outbox::new(pool.clone(), backend).await.unwrap();
    let store = OrderStore::new(outbox, &unique("orders")).await.unwrap();
    Fixture {
        reactions: InventoryReactions::new(store.clone()),
        store,
        pool,
        _db: db,
    }
}

impl Fixture {
    /// Places a PENDING order (2 × SKU-1, 1 × SKU-2) and returns its id.
    async fn place(&self) -> Uuid {
        let request: OrderRequest = serde_json::from_value(order_body()).unwrap();
        let order = NewOrder::parse(&request).unwrap();
        match self.store.place(&order, "{}", None).await.unwrap() {
            Placed::Created { id } => id,
            other => panic!("not created: {other:?}"),
        }
    }

    /// Hands `records` to the handler as one batch, each with no span.
    async fn handle(&self, records: Vec<Record>) -> Result<(), HandlerError> {
        let items: Vec<(Record, Span)> = records.into_iter().map(|r| (r, Span::none())).collect();
        self.reactions.handle_batch(&Batch::new(&items)).await
    }

    async fn status(&self, id: Uuid) -> OrderStatus {
        self.store.get(id).await.unwrap().unwrap().status
    }

    /// The statuses the order went through, oldest first.
    async fn history(&self, id: Uuid) -> Vec<OrderStatus> {
        let order = self.store.get(id).await.unwrap().unwrap();
        order.history.iter().map(|t| t.status).collect()
    }

    /// The headers of the order's outbox rows, in the order they were enqueued.
    async fn outbox_headers(&self, id: Uuid) -> Vec<Headers> {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT headers FROM spine_outbox WHERE msg_key = $1 ORDER BY id")
                .bind(id.to_string().into_bytes())
                .fetch_all(&self.pool)
                .await
                .unwrap();
        rows.iter()
            .map(|bytes| Headers::from_bytes(bytes).expect("stored headers decode"))
            .collect()
    }

    /// The types of the order's outbox rows, in the order they were enqueued.
    async fn facts(&self, id: Uuid) -> Vec<String> {
        self.outbox_headers(id)
            .await
            .iter()
            .map(|h| h.get_str("event-type").unwrap_or_default().to_owned())
            .collect()
    }

    async fn inbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM spine_inbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// `event` as the runner hands it over: consumed from `inventory.events`, partition 0.
fn record<E: Event>(event: &E, offset: i64) -> Record {
    let outgoing = OutgoingRecord::from_event(event).unwrap();
    Record {
        topic: outgoing.topic,
        partition: 0,
        offset,
        key: outgoing.key,
        payload: Some(outgoing.payload),
        headers: outgoing.headers,
        timestamp_ms: None,
        attempt: 1,
    }
}

fn reserved(order_id: Uuid) -> StockReserved {
    StockReserved::new(
        order_id,
        vec![ReservedLine {
            sku: "SKU-1".into(),
            quantity: 2,
        }],
    )
}

fn failed(order_id: Uuid) -> StockReservationFailed {
    StockReservationFailed::new(order_id, "insufficient stock", vec!["SKU-2".into()])
}

async fn a_fact_processed_before_is_skipped_and_the_fresh_one_in_its_batch_applied(
    backend: Backend,
) {
    let fx = fixture(backend).await;
    let (first, second) = (fx.place().await, fx.place().await);
    let earlier = reserved(first);
    fx.handle(vec![record(&earlier, 0)]).await.unwrap();

    // Redelivered with a fresh fact about another order after it.
    fx.handle(vec![record(&earlier, 0), record(&reserved(second), 1)])
        .await
        .unwrap();

    assert_eq!(fx.status(second).await, OrderStatus::Confirmed);
    assert_eq!(fx.facts(second).await, ["OrderPlaced", "OrderConfirmed"]);
    assert_eq!(
        fx.history(first).await,
        [OrderStatus::Pending, OrderStatus::Confirmed],
        "the duplicate changed nothing"
    );
    assert_eq!(
        fx.facts(first).await,
        ["OrderPlaced", "OrderConfirmed"],
        "and enqueued nothing"
    );
    assert_eq!(fx.inbox_rows().await, 2, "one inbox row per event");
}

async fn a_reservation_and_a_failure_in_one_batch_confirm_one_order_and_reject_the_other(
    backend: Backend,
) {
    let fx = fixture(backend).await;
    let (confirmed, rejected) = (fx.place().await, fx.place().await);

    fx.handle(vec![
        record(&reserved(confirmed), 0),
        record(&failed(rejected), 1),
    ])
    .await
    .unwrap();

    assert_eq!(fx.status(confirmed).await, OrderStatus::Confirmed);
    assert_eq!(fx.facts(confirmed).await, ["OrderPlaced", "OrderConfirmed"]);
    let order = fx.store.get(rejected).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Rejected);
    let reason = order.history[1].reason.as_deref().unwrap_or_default();
    assert_eq!(reason, "insufficient stock (short: SKU-2)");
    assert_eq!(fx.facts(rejected).await, ["OrderPlaced", "OrderRejected"]);
    assert_eq!(fx.inbox_rows().await, 2);
}

async fn two_facts_of_one_order_in_a_batch_apply_as_they_would_one_after_another(backend: Backend) {
    let fx = fixture(backend).await;
    let id = fx.place().await;
    let first = reserved(id);

    // The first confirms; its repeat in the same batch is a duplicate; a later failure finds
    // the order already final and is recorded and ignored.
    fx.handle(vec![
        record(&first, 0),
        record(&first, 1),
        record(&failed(id), 2),
    ])
    .await
    .unwrap();

    assert_eq!(
        fx.history(id).await,
        [OrderStatus::Pending, OrderStatus::Confirmed]
    );
    assert_eq!(fx.facts(id).await, ["OrderPlaced", "OrderConfirmed"]);
    assert_eq!(fx.inbox_rows().await, 2, "the reservation and the failure");
}

async fn an_undecodable_record_fails_its_batch_as_poison_and_nothing_is_applied(backend: Backend) {
    let fx = fixture(backend).await;
    let (before, after) = (fx.place().await, fx.place().await);
    let mut garbage = record(&reserved(Uuid::now_v7()), 1);
    garbage.payload = Some(b"definitely not avro".to_vec());

    let result = fx
        .handle(vec![
            record(&reserved(before), 0),
            garbage,
            record(&failed(after), 2),
        ])
        .await;

    assert!(matches!(result, Err(HandlerError::Poison(_))), "{result:?}");
    for id in [before, after] {
        assert_eq!(fx.status(id).await, OrderStatus::Pending);
        assert_eq!(fx.facts(id).await, ["OrderPlaced"]);
    }
    assert_eq!(fx.inbox_rows().await, 0, "no event claimed");
}

async fn a_fact_for_an_unknown_order_fails_its_batch_as_poison_and_nothing_is_applied(
    backend: Backend,
) {
    let fx = fixture(backend).await;
    let known = fx.place().await;

    let result = fx
        .handle(vec![
            record(&reserved(known), 0),
            record(&reserved(Uuid::now_v7()), 1),
        ])
        .await;

    let Err(HandlerError::Poison(err)) = result else {
        panic!("not poison: {result:?}");
    };
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(fx.status(known).await, OrderStatus::Pending, "rolled back");
    assert_eq!(fx.facts(known).await, ["OrderPlaced"]);
    assert_eq!(fx.inbox_rows().await, 0, "no event claimed");
}

async fn each_fact_enqueued_by_a_batch_carries_its_own_records_trace(backend: Backend) {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing::instrument::WithSubscriber;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let fx = fixture(backend).await;
    let (confirmed, rejected) = (fx.place().await, fx.place().await);
    // A tracer exporting nowhere: enough for spans to have OpenTelemetry contexts.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let dispatch = tracing::Dispatch::new(subscriber);
    // Two root spans, as the runner's `process` spans of records from two traces would be.
    let (items, trace_ids) = tracing::dispatcher::with_default(&dispatch, || {
        let items = vec![
            (
                record(&reserved(confirmed), 0),
                tracing::info_span!("process", offset = 0),
            ),
            (
                record(&failed(rejected), 1),
                tracing::info_span!("process", offset = 1),
            ),
        ];
        let trace_ids: Vec<String> = items
            .iter()
            .map(|(_, span)| span.context().span().span_context().trace_id().to_string())
            .collect();
        (items, trace_ids)
    });
    assert_ne!(trace_ids[0], trace_ids[1], "two traces");

    fx.reactions
        .handle_batch(&Batch::new(&items))
        .with_subscriber(dispatch)
        .await
        .unwrap();

    for (id, trace_id) in [confirmed, rejected].into_iter().zip(&trace_ids) {
        let headers = fx.outbox_headers(id).await;
        assert_eq!(headers.len(), 2, "OrderPlaced and the outcome");
        let traceparent = headers[1].get_str("traceparent").expect("a traceparent");
        assert_eq!(
            traceparent.split('-').nth(1),
            Some(trace_id.as_str()),
            "{traceparent} is in its record's trace"
        );
    }
}
