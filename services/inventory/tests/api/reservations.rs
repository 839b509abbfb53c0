//! OrderPlaced reserves every line or none, once per event, whatever the writer's schema
//! version; OrderRejected releases what an order holds, once.

use spine_events::Event;
use spine_events::inventory::{StockReservationFailed, StockReserved};
use spine_events::orders::{LineItem, OrderRejected, v1};
use spine_kit::db::Backend;
use spine_kit::kafka::OutgoingRecord;
use uuid::Uuid;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    an_order_with_enough_stock_is_reserved_and_the_stock_decremented,
    an_order_short_on_one_line_reserves_nothing_and_names_the_sku,
    an_order_placed_delivered_twice_is_reserved_once,
    a_v1_order_placed_is_reserved_like_a_v2_one,
    a_rejected_order_releases_its_reservation_once,
);

fn facts<E: Event>(app: &TestApp, order_id: Uuid) -> Vec<E> {
    records_keyed(
        &app.settings.kafka,
        StockReserved::TOPIC,
        &order_id.to_string(),
        1,
    )
    .iter()
    .filter(|r| r.headers.get_str("event-type") == Some(E::NAME))
    .map(|r| spine_events::decode(&r.payload).unwrap())
    .collect()
}

/// Sends `marker` with `key`: once its fact is out, every earlier record of `key` was handled
/// (the runner keeps one key's records in offset order).
async fn handled_after(app: &TestApp, key: Uuid, marker_sku: &str) {
    let marker = placed(vec![LineItem::new(marker_sku, 1, 100)]);
    let mut record = OutgoingRecord::from_event(&marker).unwrap();
    record.key = Some(key.to_string().into_bytes());
    app.send(&record).await;
    let marked: Vec<StockReserved> = facts(app, marker.order_id);
    assert_eq!(marked.len(), 1, "the marker order is reserved");
}

async fn an_order_with_enough_stock_is_reserved_and_the_stock_decremented(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, b, _] = app.skus.clone();
    let order = placed(vec![
        LineItem::new(&a, 2, 1250),
        LineItem::new(&b, 1, 500),
        LineItem::new(&a, 1, 1250),
    ]);

    app.publish(&order).await;

    let reserved: Vec<StockReserved> = facts(&app, order.order_id);
    assert_eq!(reserved.len(), 1, "one StockReserved");
    let mut lines: Vec<(String, i32)> = reserved[0]
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity))
        .collect();
    lines.sort();
    assert_eq!(lines, [(a.clone(), 3), (b.clone(), 1)]);
    assert_eq!(app.available(&a).await, 7);
    assert_eq!(app.available(&b).await, 9);
    assert_eq!(app.count("reservations").await, 2);
    app.stop().await;
}

async fn an_order_short_on_one_line_reserves_nothing_and_names_the_sku(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, b, c] = app.skus.clone();
    let order = placed(vec![
        LineItem::new(&a, 2, 100),
        LineItem::new(&c, 5, 100), // only 1 in stock
        LineItem::new(&b, 1, 100),
        LineItem::new("NO-SUCH-SKU", 1, 100),
    ]);

    app.publish(&order).await;

    let failed: Vec<StockReservationFailed> = facts(&app, order.order_id);
    assert_eq!(failed.len(), 1, "one StockReservationFailed");
    let mut short = failed[0].short_skus.clone();
    short.sort();
    let mut expected = vec![c.clone(), "NO-SUCH-SKU".to_owned()];
    expected.sort();
    assert_eq!(short, expected);
    assert!(!failed[0].reason.is_empty());
    assert!(
        facts::<StockReserved>(&app, order.order_id).is_empty(),
        "no StockReserved"
    );
    // All or none: the lines that had stock were not touched either.
    assert_eq!(app.available(&a).await, 10);
    assert_eq!(app.available(&b).await, 10);
    assert_eq!(app.available(&c).await, 1);
    assert_eq!(app.count("reservations").await, 0);
    assert_eq!(app.count("spine_inbox").await, 1, "the event is recorded");
    app.stop().await;
}

async fn an_order_placed_delivered_twice_is_reserved_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, b, _] = app.skus.clone();
    let order = placed(vec![LineItem::new(&a, 4, 100)]);

    // At-least-once: the same event twice.
    app.publish(&order).await;
    app.publish(&order).await;
    handled_after(&app, order.order_id, &b).await;

    let reserved: Vec<StockReserved> = facts(&app, order.order_id);
    assert_eq!(reserved.len(), 1, "one StockReserved for two deliveries");
    assert_eq!(app.available(&a).await, 6, "decremented once");
    assert_eq!(
        app.count("reservations").await,
        2,
        "the order's and the marker's"
    );
    assert_eq!(
        app.count("spine_inbox").await,
        2,
        "the order and the marker"
    );
    app.stop().await;
}

async fn a_v1_order_placed_is_reserved_like_a_v2_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, _, _] = app.skus.clone();
    let v2 = placed(vec![LineItem::new(&a, 3, 100)]);
    let order = v1::OrderPlaced {
        event_id: v2.event_id,
        occurred_at: v2.occurred_at,
        order_id: v2.order_id,
        customer_id: v2.customer_id.clone(),
        email: v2.email.clone(),
        items: v2.items.clone(),
        total_minor: v2.total_minor,
        currency: v2.currency.clone(),
    };

    app.publish(&order).await;

    let reserved: Vec<StockReserved> = facts(&app, order.order_id);
    assert_eq!(reserved.len(), 1, "one StockReserved");
    assert_eq!(reserved[0].lines.len(), 1);
    assert_eq!(reserved[0].lines[0].quantity, 3);
    assert_eq!(app.available(&a).await, 7);
    app.stop().await;
}

async fn a_rejected_order_releases_its_reservation_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, b, _] = app.skus.clone();
    let order = placed(vec![LineItem::new(&a, 3, 100)]);
    app.publish(&order).await;
    assert_eq!(facts::<StockReserved>(&app, order.order_id).len(), 1);
    assert_eq!(app.available(&a).await, 7);
    let rejected = OrderRejected {
        event_id: Uuid::now_v7(),
        occurred_at: order.occurred_at,
        order_id: order.order_id,
        email: order.email.clone(),
        reason: "payment declined".into(),
    };
    let another = OrderRejected {
        event_id: Uuid::now_v7(),
        ..rejected.clone()
    };

    app.publish(&rejected).await;
    app.publish(&rejected).await;
    app.publish(&another).await;
    handled_after(&app, order.order_id, &b).await;

    assert_eq!(app.available(&a).await, 10, "released once");
    let released: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM reservations WHERE status = 'RELEASED'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(released, 1);
    app.stop().await;
}
