//! The broker down (librdkafka's mock cluster, fault injection): orders are still accepted
//! until the outbox backlog reaches its bound, then shed with 503 and Retry-After, and the
//! service stays ready; when the broker returns every accepted order is published, none lost.
//! The database gone (PostgreSQL refusing connections): not ready.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use spine_events::orders::OrderPlaced;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    orders_are_accepted_while_the_broker_is_down_shed_at_the_bound_and_published_after
);

mod postgres_outage {
    // SQLite lives inside the process: only a database server can go away on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readiness_fails_while_the_database_refuses_connections_and_returns_after() {
        super::readiness_follows_the_database(spine_kit::db::Backend::Postgres).await
    }
}

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
    let ready = app.readyz().await;
    assert_eq!(ready.0, 200, "ready with the broker down: {}", ready.1);

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
    let (status, body) = app.readyz().await;
    assert_eq!(status, 200, "still ready while shedding: {body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["outbox"]["backlog_rows"], BOUND);

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

async fn readiness_follows_the_database(backend: Backend) {
    // The broker is down too: readiness must not care.
    let mock = MockCluster::new(1).unwrap();
    let group = spine_kit::testing::unique("orders");
    for topic in ["orders.events", "inventory.events", &format!("{group}.dlq")] {
        mock.create_topic(topic, 3, 1).unwrap();
    }
    let app = spawn_app_with(backend, |s| {
        s.kafka.bootstrap_servers = mock.bootstrap_servers();
        s.kafka.topics.create_missing = false;
        s.orders.consumer_group = group.clone();
    })
    .await;
    mock.broker_down(1).unwrap();
    assert_eq!(app.readyz().await.0, 200);

    let database = app.database_name();
    let admin = admin_pool().await;
    let refuse = |allow: bool| format!("ALTER DATABASE {database} ALLOW_CONNECTIONS {allow}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse(false)))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .execute(&admin)
    .await
    .unwrap();
    let down = app.wait_for_readyz(503).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(refuse(true)))
        .execute(&admin)
        .await
        .unwrap();
    assert_eq!(down["checks"]["database"], "unavailable", "{down}");
    let up = app.wait_for_readyz(200).await;
    assert_eq!(up["checks"]["database"], "ok", "{up}");
    app.stop().await;
}

async fn admin_pool() -> sqlx::AnyPool {
    let settings = spine_kit::settings::DatabaseSettings {
        url: std::env::var("SPINE_TEST_POSTGRES_URL").unwrap().into(),
        ..Default::default()
    };
    spine_kit::db::connect(&settings).await.unwrap().0
}
