//! The broker down (librdkafka's mock cluster, fault injection): orders are still accepted
//! until the outbox backlog reaches its bound, then shed with 503 and Retry-After; when the
//! broker returns every accepted order is published, none lost.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use spine_events::orders::OrderPlaced;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    orders_are_accepted_while_the_broker_is_down_shed_at_the_bound_and_published_after
);

async fn orders_are_accepted_while_the_broker_is_down_shed_at_the_bound_and_published_after(
    backend: Backend,
) {
    const BOUND: i64 = 3;
    let mock = MockCluster::new(1).unwrap();
    let group = spine_kit::testing::unique("orders");
    for topic in ["orders.events", "inventory.events", &format!("{group}.dlq")] {
        mock.create_topic(topic, 3, 1).unwrap();
    }
    let app = spawn_app_with(backend, |s| {
        s.kafka.bootstrap_servers = mock.bootstrap_servers();
        s.kafka.topics.create_missing = false;
        s.kafka.producer.delivery_timeout = Duration::from_secs(2);
        s.outbox.max_backlog = BOUND;
        s.outbox.max_backoff = Duration::from_millis(500);
        s.orders.consumer_group = group.clone();
    })
    .await;
    mock.broker_down(1).unwrap();

    let mut accepted = Vec::new();
    for _ in 0..BOUND {
        accepted.push(app.place().await);
    }
    let shed = app.post_order(&order_body()).await;
    assert_eq!(shed.status(), 503, "shed at the bound");
    assert!(shed.headers().contains_key("retry-after"));
    assert_eq!(
        shed.json::<Value>().await.unwrap()["error"]["code"],
        "overloaded"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.backlog().await,
        BOUND,
        "accepted orders wait in the outbox"
    );

    mock.broker_up(1).unwrap();
    assert!(
        wait_for_empty_backlog(&app).await,
        "the backlog drains once the broker is back"
    );
    let published = read_settled(
        &app.settings.kafka,
        "orders.events",
        accepted.len(),
        Duration::from_secs(30),
    );
    let mut ids: Vec<String> = published
        .iter()
        .map(|r| {
            spine_events::decode::<OrderPlaced>(&r.payload)
                .unwrap()
                .order_id
                .to_string()
        })
        .collect();
    ids.sort();
    accepted.sort();
    assert_eq!(ids, accepted, "every accepted order published once");
    // Below the bound again: accepted.
    assert_eq!(app.post_order(&order_body()).await.status(), 202);
    app.stop().await;
}

async fn wait_for_empty_backlog(app: &TestApp) -> bool {
    for _ in 0..300 {
        if app.backlog().await == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
