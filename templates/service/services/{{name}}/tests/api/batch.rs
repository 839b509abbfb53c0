//! The batch handler called directly with multi-record batches, as the runner may hand them
//! over: one transaction per batch, events processed before skipped, and all or nothing when a
//! record cannot be read.

use spine_events::Event;
use spine_events::orders::OrderConfirmed;
use spine_kit::db::Backend;
use spine_kit::kafka::consumer::{Batch, BatchHandler, HandlerError, Record};
use spine_kit::kafka::OutgoingRecord;
use spine_kit::outbox::Outbox;
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use spine_{{name}}::reactions::OrderReactions;
use spine_{{name}}::store::{{Name}}Store;
use sqlx::AnyPool;
use tracing::Span;

use crate::support::placed;

spine_kit::on_sqlite_and_postgres!(
    a_batch_records_its_fresh_orders_once_and_skips_events_processed_before,
    an_undecodable_record_fails_its_batch_as_poison_and_nothing_is_recorded,
);

/// The handler over a fresh database, with no broker: what the runner would call.
struct Fixture {
    reactions: OrderReactions,
    store: {{Name}}Store,
    pool: AnyPool,
    _db: TestDatabase,
}

async fn fixture(backend: Backend) -> Fixture {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let (pool, backend) = spine_kit::db::connect(&db.settings).await.unwrap();
    let outbox = Outbox::new(pool.clone(), backend).await.unwrap();
    let store = {{Name}}Store::new(outbox, &unique("{{name}}")).await.unwrap();
    Fixture {
        reactions: OrderReactions::new(store.clone()),
        store,
        pool,
        _db: db,
    }
}

impl Fixture {
    /// Hands `records` to the handler as one batch, each with no span.
    async fn handle(&self, records: Vec<Record>) -> Result<(), HandlerError> {
        let items: Vec<(Record, Span)> = records.into_iter().map(|r| (r, Span::none())).collect();
        self.reactions.handle_batch(&Batch::new(&items)).await
    }

    /// `SELECT COUNT(*)` of a table.
    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

/// `event` as the runner hands it over: consumed from `orders.events`, partition 0.
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

async fn a_batch_records_its_fresh_orders_once_and_skips_events_processed_before(
    backend: Backend,
) {
    let fx = fixture(backend).await;
    let (earlier, fresh) = (placed(), placed());
    fx.handle(vec![record(&earlier, 0)]).await.unwrap();

    // Redelivered, then a fresh order delivered twice, with another fact between.
    fx.handle(vec![
        record(&earlier, 0),
        record(&fresh, 1),
        record(&OrderConfirmed::of(&fresh), 2),
        record(&fresh, 3),
    ])
    .await
    .unwrap();

    let recorded = fx.store.order(fresh.order_id).await.unwrap();
    assert_eq!(recorded.map(|o| o.total_minor), Some(3_000), "the fresh order");
    assert_eq!(fx.count("{{name}}_orders").await, 2, "each order once");
    assert_eq!(fx.count("spine_outbox").await, 2, "one {{Fact}} per order");
    assert_eq!(fx.count("spine_inbox").await, 2, "one inbox row per event");
}

async fn an_undecodable_record_fails_its_batch_as_poison_and_nothing_is_recorded(
    backend: Backend,
) {
    let fx = fixture(backend).await;
    let (before, after) = (placed(), placed());
    let mut garbage = record(&placed(), 1);
    garbage.payload = Some(b"definitely not avro".to_vec());

    let result = fx
        .handle(vec![record(&before, 0), garbage, record(&after, 2)])
        .await;

    assert!(matches!(result, Err(HandlerError::Poison(_))), "{result:?}");
    assert_eq!(fx.count("{{name}}_orders").await, 0, "nothing recorded");
    assert_eq!(fx.count("spine_outbox").await, 0, "nothing enqueued");
    assert_eq!(fx.count("spine_inbox").await, 0, "no event claimed");
}
