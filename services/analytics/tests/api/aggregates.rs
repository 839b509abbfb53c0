//! Every fact counts once, whichever version wrote it and however often it is delivered.
//! Topics are shared with other tests, so assertions look only at this test's orders (and a
//! currency no other test uses).

use std::time::Duration;

use serde_json::Value;
use spine_analytics::Application;
use spine_analytics::settings::Settings;
use spine_events::orders::{LineItem, OrderConfirmed, OrderPlaced, OrderRejected, v1};
use spine_kit::db::Backend;
use spine_kit::kafka::Publisher;
use spine_kit::testing::{fresh_database, unique};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

spine_kit::on_sqlite_and_postgres!(every_fact_counts_once_whichever_version_wrote_it);

async fn every_fact_counts_once_whichever_version_wrote_it(backend: Backend) {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.database = db.settings.clone();
    if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        settings.kafka.bootstrap_servers = servers;
    }
    settings.kafka.consumer.max_poll_interval = Duration::from_secs(6);
    settings.kafka.consumer.shutdown_timeout = Duration::from_secs(3);
    settings.analytics.consumer_group = unique("analytics");
    let app = Application::build(settings.clone())
        .await
        .expect("analytics starts");
    let stats_url = format!("http://127.0.0.1:{}/stats", app.port());
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone()));

    // A currency of this test's own, so revenue is this test's alone.
    let currency = format!("T{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let publisher = Publisher::new(&settings.kafka, "test").unwrap();
    let mut a = OrderPlaced::new(
        uuid::Uuid::now_v7(),
        "c",
        "a@example.com",
        vec![LineItem::new("S", 2, 1500)],
        &currency,
    );
    a.occurred_at -= 1_500;
    let mut confirmed = OrderConfirmed::of(&a);
    confirmed.occurred_at = a.occurred_at + 1_500;
    // An order written by a producer still on OrderPlaced v1.
    let b = v1::OrderPlaced {
        event_id: uuid::Uuid::now_v7(),
        occurred_at: a.occurred_at,
        order_id: uuid::Uuid::now_v7(),
        customer_id: "c".into(),
        email: "b@example.com".into(),
        items: vec![LineItem::new("S", 1, 500)],
        total_minor: 500,
        currency: currency.clone(),
    };
    let mut rejected = OrderRejected {
        event_id: uuid::Uuid::now_v7(),
        occurred_at: b.occurred_at + 250,
        order_id: b.order_id,
        email: b.email.clone(),
        reason: "out of stock".into(),
    };
    publisher.publish(&a).await.unwrap();
    publisher.publish(&confirmed).await.unwrap();
    publisher.publish(&confirmed).await.unwrap(); // delivered twice
    publisher.publish(&b).await.unwrap();
    publisher.publish(&rejected).await.unwrap();
    rejected.event_id = uuid::Uuid::now_v7(); // a distinct fact for an order already final
    publisher.publish(&rejected).await.unwrap();

    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pool = spine_kit::db::connect(&db.settings).await.unwrap().0;
    let outcomes = || async {
        sqlx::query("SELECT COUNT(*) FROM time_to_outcome WHERE order_id IN ($1, $2)")
            .bind(a.order_id.to_string())
            .bind(b.order_id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    while outcomes().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "both outcomes aggregated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // let the duplicates arrive too
    let stats: Value = client
        .get(&stats_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(stats["revenue"][&currency]["total_minor"], 3000, "{stats}");
    assert_eq!(
        stats["revenue"][&currency]["orders"], 1,
        "the duplicate confirmation counted once"
    );
    let millis = |order: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT outcome, millis FROM time_to_outcome WHERE order_id = $1")
                .bind(order.to_string())
                .fetch_one(&pool)
                .await
                .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
                .unwrap()
        }
    };
    assert_eq!(millis(a.order_id).await, ("CONFIRMED".to_owned(), 1_500));
    assert_eq!(millis(b.order_id).await, ("REJECTED".to_owned(), 250));
    let status = |order: uuid::Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT status FROM order_facts WHERE order_id = $1")
                .bind(order.to_string())
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<String, _>(0)
        }
    };
    assert_eq!(status(a.order_id).await, "CONFIRMED");
    assert_eq!(status(b.order_id).await, "REJECTED");
    assert!(stats["time_to_outcome_ms"]["count"].as_i64().unwrap() >= 2);
    assert!(stats["events"]["OrderPlaced"].as_i64().unwrap() >= 2);
    let minute = a.occurred_at - a.occurred_at.rem_euclid(60_000);
    assert!(
        stats["orders_per_minute"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["minute"] == minute),
        "{stats}"
    );
    token.cancel();
    task.await.unwrap().unwrap();
}
