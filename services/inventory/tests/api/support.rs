//! `spawn_app` and friends.
//!
//! Each app reads orders' facts from a topic of its own (`inventory.orders_topic`): on the
//! shared `orders.events` it would act as inventory for every other suite's orders (and reject
//! them, their SKUs being unknown to its fresh database). Its own facts go to the shared
//! `inventory.events`, keyed by order ids no one else uses.

use std::time::Duration;

use serde_json::Value;
use spine_events::Event;
use spine_events::orders::{LineItem, OrderPlaced};
use spine_inventory::Application;
use spine_inventory::settings::{SeedEntry, Settings};
use spine_kit::db::Backend;
use spine_kit::kafka::{OutgoingRecord, Publisher};
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Kafka settings for the test broker, with fast group timeouts for tansu.
pub use spine_kit::testing::kafka_settings as kafka;

/// The service, running on a free port with its own database, consumer group, input topic
/// and SKUs.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub pool: AnyPool,
    /// Publishes test inputs to the app's input topic.
    pub orders: Publisher,
    /// Three SKUs of this test's own, seeded with 10, 10 and 1 units.
    pub skus: [String; 3],
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let skus = [unique("SKU-A"), unique("SKU-B"), unique("SKU-C")];
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.kafka = kafka();
    settings.database = db.settings.clone();
    settings.outbox.poll_interval = Duration::from_millis(100);
    settings.inventory.consumer_group = unique("inventory");
    settings.inventory.orders_topic = unique("orders.events");
    settings.inventory.seed = skus
        .iter()
        .zip([10, 10, 1])
        .map(|(sku, quantity)| SeedEntry {
            sku: sku.clone(),
            quantity,
        })
        .collect();
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
        skus,
        token,
        task,
        _db: db,
    }
}

/// An OrderPlaced (v2) for a fresh order id.
pub fn placed(items: Vec<LineItem>) -> OrderPlaced {
    OrderPlaced::new(
        Uuid::now_v7(),
        "customer-42",
        "ada@example.com",
        items,
        "EUR",
    )
}

impl TestApp {
    /// Publishes `event` (any version) to the app's input topic, as orders' relay would.
    pub async fn publish<E: Event>(&self, event: &E) {
        let mut record = OutgoingRecord::from_event(event).unwrap();
        record.topic = self.settings.inventory.orders_topic.clone();
        self.send(&record).await;
    }

    /// Sends a raw record to the app's input topic.
    pub async fn send(&self, record: &OutgoingRecord) {
        let mut record = record.clone();
        record.topic = self.settings.inventory.orders_topic.clone();
        self.orders.send(&record).await.expect("the broker acks");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    pub async fn put_stock(&self, sku: &str, body: &str) -> reqwest::Response {
        self.client
            .put(format!("{}/stock/{sku}", self.address))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT /stock/{sku}")
    }

    /// A SKU's available units, as the API reports them.
    pub async fn available(&self, sku: &str) -> i64 {
        let body: Value = self
            .get(&format!("/stock/{sku}"))
            .await
            .json()
            .await
            .unwrap();
        body["available"].as_i64().unwrap()
    }

    /// `SELECT COUNT(*)` of a table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
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
