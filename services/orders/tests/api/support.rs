//! `spawn_app` and friends.

use std::time::Duration;

use serde_json::{Value, json};
use spine_kit::db::Backend;
use spine_kit::settings::KafkaSettings;
use spine_kit::testing::{TestDatabase, fresh_database, unique};
use spine_orders::Application;
use spine_orders::settings::Settings;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

pub use spine_kit::testing::{Received, read_settled};

/// Kafka settings for the test broker, with fast group timeouts for tansu.
pub use spine_kit::testing::kafka_settings as kafka;

/// The service, running on a free port with its own database and consumer group.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub pool: AnyPool,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: TestDatabase,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spine_kit::testing::init_test_log();
    let db = fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.kafka = kafka();
    settings.database = db.settings.clone();
    settings.outbox.poll_interval = Duration::from_millis(100);
    settings.orders.consumer_group = unique("orders");
    tweak(&mut settings);
    let app = Application::build(settings.clone())
        .await
        .expect("the service starts (is the broker up? scripts/broker start)");
    let address = format!("http://127.0.0.1:{}", app.port());
    let token = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(token.clone()));
    let (pool, _) = spine_kit::db::connect(&db.settings).await.unwrap();
    TestApp {
        address,
        client: reqwest::Client::new(),
        settings,
        pool,
        token,
        task,
        _db: db,
    }
}

/// A valid order body.
pub fn order_body() -> Value {
    json!({
        "customer_id": "customer-42",
        "email": "ada@example.com",
        "currency": "EUR",
        "items": [
            { "sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250 },
            { "sku": "SKU-2", "quantity": 1, "unit_price_minor": 500 }
        ]
    })
}

impl TestApp {
    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.address))
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn post_order_with_key(&self, body: &Value, key: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/orders", self.address))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST /orders")
    }

    pub async fn get_order(&self, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/orders/{id}", self.address))
            .send()
            .await
            .expect("GET /orders/{id}")
    }

    /// Places a valid order and returns its id.
    pub async fn place(&self) -> String {
        let response = self.post_order(&order_body()).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET /orders/{id}` until its status is `status`.
    pub async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let order: Value = self.get_order(id).await.json().await.unwrap();
            if order["status"] == status {
                return order;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "order {id} never became {status}: {order}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `SELECT COUNT(*)` of a table.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Unpublished outbox rows.
    pub async fn backlog(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM spine_outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `GET /readyz`: the status and the JSON body.
    pub async fn readyz(&self) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/readyz", self.address))
            .send()
            .await
            .expect("GET /readyz");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `/readyz` until it answers `status`; returns that body.
    pub async fn wait_for_readyz(&self, status: u16) -> Value {
        let mut last = (0, Value::Null);
        for _ in 0..150 {
            last = self.readyz().await;
            if last.0 == status {
                return last.1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz never answered {status}; last {last:?}");
    }

    /// The database's name (PostgreSQL): the last segment of its URL.
    pub fn database_name(&self) -> String {
        use secrecy::ExposeSecret;
        let url = self.settings.database.url.expose_secret();
        let path = url.rsplit('/').next().unwrap_or_default();
        path.split('?').next().unwrap_or_default().to_owned()
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

/// The records of `topic` keyed by `order_id`, read from the beginning (other tests' records
/// share the topic).
pub fn facts_of(
    kafka: &KafkaSettings,
    topic: &str,
    order_id: &str,
    expected: usize,
) -> Vec<Received> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = read_settled(kafka, topic, usize::MAX, Duration::from_secs(2));
        let mine: Vec<Received> = all
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(order_id.as_bytes()))
            .collect();
        if mine.len() >= expected || std::time::Instant::now() > deadline {
            return mine;
        }
    }
}
