//! Orders reacts to inventory's facts once each: StockReserved confirms, StockReservationFailed
//! rejects, a redelivered fact changes nothing.

use serde_json::Value;
use spine_events::Event;
use spine_events::inventory::{ReservedLine, StockReservationFailed, StockReserved};
use spine_events::orders::{OrderConfirmed, OrderRejected};
use spine_kit::db::Backend;
use spine_kit::kafka::Publisher;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_reservation_confirms_the_order_once_even_when_redelivered,
    a_failed_reservation_rejects_the_order_with_its_reason,
);

async fn a_reservation_confirms_the_order_once_even_when_redelivered(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.place().await;
    let inventory = Publisher::new(&app.settings.kafka, "fake-inventory").unwrap();
    let reserved = StockReserved::new(
        id.parse().unwrap(),
        vec![ReservedLine {
            sku: "SKU-1".into(),
            quantity: 2,
        }],
    );
    // At-least-once: the same fact twice.
    inventory.publish(&reserved).await.unwrap();
    inventory.publish(&reserved).await.unwrap();

    let order = app.wait_for_status(&id, "CONFIRMED").await;
    let facts = facts_of(&app.settings.kafka, OrderConfirmed::TOPIC, &id, 2);
    // Give the duplicate time to be consumed (and ignored).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let order_again: Value = app.get_order(&id).await.json().await.unwrap();

    let statuses: Vec<&str> = order_again["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["PENDING", "CONFIRMED"], "{order}");
    let confirmed: Vec<OrderConfirmed> = facts
        .iter()
        .filter(|r| r.headers.get_str("event-type") == Some(OrderConfirmed::NAME))
        .map(|r| spine_events::decode(&r.payload).unwrap())
        .collect();
    assert_eq!(confirmed.len(), 1, "one OrderConfirmed");
    assert_eq!(confirmed[0].total_minor, 3000);
    assert_eq!(
        app.count("spine_inbox").await,
        1,
        "one inbox row for the two deliveries"
    );
    app.stop().await;
}

async fn a_failed_reservation_rejects_the_order_with_its_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = app.place().await;
    let inventory = Publisher::new(&app.settings.kafka, "fake-inventory").unwrap();
    let failed = StockReservationFailed::new(
        id.parse().unwrap(),
        "insufficient stock",
        vec!["SKU-2".into()],
    );
    inventory.publish(&failed).await.unwrap();

    let order = app.wait_for_status(&id, "REJECTED").await;
    let reason = order["history"][1]["reason"].as_str().unwrap();
    assert!(
        reason.contains("insufficient stock") && reason.contains("SKU-2"),
        "{reason}"
    );
    let facts = facts_of(&app.settings.kafka, OrderRejected::TOPIC, &id, 2);
    let rejected: Vec<OrderRejected> = facts
        .iter()
        .filter(|r| r.headers.get_str("event-type") == Some(OrderRejected::NAME))
        .map(|r| spine_events::decode(&r.payload).unwrap())
        .collect();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].reason.contains("SKU-2"));
    app.stop().await;
}
