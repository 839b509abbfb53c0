//! `spawn_app` and friends.
//!
//! Each app reads orders' facts from a topic of its own (`{{name}}.orders_topic`), so that it
//! never sees another suite's orders on the shared `orders.events`. Its own facts go to the
//! shared `{{name}}.events`, keyed by order ids no one else uses; tests filter by key.

use std::time::Duration;

use spine_events::Event;
use spine_events::orders::{LineItem, OrderPlaced};
use spine_kit::db::Backend;
use spine_kit::kafka::{OutgoingRecord, Publisher};
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use spine_{{name}}::Application;
use spine_{{name}}::settings::Settings;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Kafka settings for the test broker, with fast group timeouts for tansu.
pub use spine_kit::testing::kafka_settings as kafka;

/// The service, running on a free port with its own database, consumer group and input topic.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub pool: AnyPool,
    /// Publishes test inputs to the app's input topic, as orders' relay would.
    pub orders: Publisher,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`] with settings changed by `adjust` first (e.g. the Confluent framing).
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.kafka = kafka();
    settings.database = db.settings.clone();
    settings.outbox.poll_interval = Duration::from_millis(100);
    settings.{{name}}.consumer_group = unique("{{name}}");
    settings.{{name}}.orders_topic = unique("orders.events");
    adjust(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("the service starts (is the broker up? scripts/broker start)");
    let address = format!("http://127.0.0.1:{}", app.port());
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone()));
    let (pool, _) = spine_kit::db::connect(&db.settings).await.unwrap();
    let orders = Publisher::new(&settings.kafka, "fake-orders").unwrap();
    TestApp {
        address,
        client: reqwest::Client::new(),
        settings,
        pool,
        orders,
        token,
        task,
        _db: db,
    }
}

/// An OrderPlaced (the latest version) for a fresh order id: two lines, 2 × 12.50 + 5.00 EUR.
pub fn placed() -> OrderPlaced {
    OrderPlaced::new(
        Uuid::now_v7(),
        "customer-42",
        "ada@example.com",
        vec![
            LineItem::new("SKU-1", 2, 1250),
            LineItem::new("SKU-2", 1, 500),
        ],
        "EUR",
    )
}

impl TestApp {
    /// Publishes `event` (any version) to the app's input topic.
    pub async fn publish<E: Event>(&self, event: &E) {
        self.send(&OutgoingRecord::from_event(event).unwrap()).await;
    }

    /// Sends a raw record to the app's input topic.
    pub async fn send(&self, record: &OutgoingRecord) {
        let mut record = record.clone();
        record.topic = self.settings.{{name}}.orders_topic.clone();
        self.orders.send(&record).await.expect("the broker acks");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    /// `SELECT COUNT(*)` of a table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The facts of `E` about `order_id` on `E`'s topic, decoded, once at least `expected` are
    /// there (or 30 s passed); `expected = 0` reads what is there now.
    pub fn facts<E: Event>(&self, order_id: Uuid, expected: usize) -> Vec<E> {
        records_keyed(
            &self.settings.kafka,
            E::TOPIC,
            &order_id.to_string(),
            expected,
        )
        .iter()
        .filter(|r| r.headers.get_str("event-type") == Some(E::NAME))
        .map(|r| spine_events::decode(&r.payload).unwrap())
        .collect()
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the service stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

pub use spine_kit::testing::records_keyed;
