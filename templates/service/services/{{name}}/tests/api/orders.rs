//! Every OrderPlaced is recorded once and answered with one {{Fact}}, whatever the writer's
//! schema version and however often it is delivered; other facts on the topic are skipped.

use spine_events::orders::{OrderConfirmed, v1};
use spine_kit::db::Backend;
use spine_kit::kafka::OutgoingRecord;
use spine_{{name}}::events::{{Fact}};
use uuid::Uuid;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_placed_order_is_recorded_and_its_fact_published_keyed_by_the_order,
    an_order_placed_delivered_twice_is_recorded_and_published_once,
    a_v1_order_placed_is_recorded_like_a_v2_one,
    other_facts_on_the_topic_are_skipped,
);

/// Sends a fresh order with `key`: once its fact is out, every earlier record of `key` was
/// handled (the runner keeps one key's records in offset order).
async fn handled_after(app: &TestApp, key: Uuid) {
    let marker = placed();
    let mut record = OutgoingRecord::from_event(&marker).unwrap();
    record.key = Some(key.to_string().into_bytes());
    app.send(&record).await;
    let marked: Vec<{{Fact}}> = app.facts(marker.order_id, 1);
    assert_eq!(marked.len(), 1, "the marker order is recorded");
}

async fn a_placed_order_is_recorded_and_its_fact_published_keyed_by_the_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let order = placed();

    app.publish(&order).await;

    // `facts` reads the records keyed by the order id: the key is the order id.
    let facts: Vec<{{Fact}}> = app.facts(order.order_id, 1);
    assert_eq!(facts.len(), 1, "one {{Fact}}");
    let fact = &facts[0];
    assert_eq!(fact.order_id, order.order_id);
    assert_eq!(fact.customer_id, "customer-42");
    assert_eq!(fact.total_minor, 3_000, "2 × 12.50 + 5.00");
    assert_eq!(fact.total_minor, order.total_minor);
    assert_eq!(fact.currency, "EUR");
    assert_ne!(fact.event_id, order.event_id, "a fact of its own");
    assert_eq!(app.count("{{name}}_orders").await, 1);
    app.stop().await;
}

async fn an_order_placed_delivered_twice_is_recorded_and_published_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let order = placed();

    // At-least-once: the same event twice.
    app.publish(&order).await;
    app.publish(&order).await;
    handled_after(&app, order.order_id).await;

    let facts: Vec<{{Fact}}> = app.facts(order.order_id, 1);
    assert_eq!(facts.len(), 1, "one {{Fact}} for two deliveries");
    assert_eq!(
        app.count("{{name}}_orders").await,
        2,
        "the order and the marker"
    );
    assert_eq!(
        app.count("spine_inbox").await,
        2,
        "the order and the marker"
    );
    assert_eq!(
        app.count("spine_outbox").await,
        2,
        "one fact each for the order and the marker"
    );
    app.stop().await;
}

async fn a_v1_order_placed_is_recorded_like_a_v2_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let v2 = placed();
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

    let facts: Vec<{{Fact}}> = app.facts(order.order_id, 1);
    assert_eq!(facts.len(), 1, "one {{Fact}}");
    assert_eq!(facts[0].total_minor, 3_000);
    app.stop().await;
}

async fn other_facts_on_the_topic_are_skipped(backend: Backend) {
    let app = spawn_app(backend).await;
    let order = placed();
    let confirmed = OrderConfirmed::of(&order);

    app.publish(&confirmed).await;
    handled_after(&app, order.order_id).await;

    assert!(
        app.facts::<{{Fact}}>(order.order_id, 0).is_empty(),
        "nothing published for an OrderConfirmed"
    );
    let dlq = format!("{}.dlq", app.settings.{{name}}.consumer_group);
    let key = order.order_id.to_string();
    assert!(
        records_keyed(&app.settings.kafka, &dlq, &key, 0).is_empty(),
        "nor dead-lettered: skipped"
    );
    assert_eq!(app.count("{{name}}_orders").await, 1, "only the marker");
    assert_eq!(app.count("spine_outbox").await, 1, "only the marker's fact");
    app.stop().await;
}
