//! The whole flow, all four services in this process on a broker of their own (started with
//! `scripts/broker` on a free port, so no other test's facts reach them): an order in stock is
//! confirmed and one out of stock rejected; each customer gets one email; analytics counts each
//! fact once. Once in single-object encoding (no registry), once with every service on the
//! Confluent framing and a schema registry, where Confluent's own Python client then reads
//! every fact spine wrote and writes an order that spine's consumers take like their own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spine_events::Framing;
use spine_kit::settings::{DatabaseSettings, KafkaSettings, RegistrySettings, SchemaSettings};
use spine_kit::testing::broker::Broker;
use spine_kit::testing::registry::TestRegistry;
use tokio_util::sync::CancellationToken;

fn sqlite(dir: &Path, name: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: format!("sqlite://{}/{name}.db?mode=rwc", dir.display()).into(),
        ..DatabaseSettings::default()
    }
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn emails_in(dir: &Path) -> Vec<(PathBuf, String)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| {
                    (
                        e.path(),
                        std::fs::read_to_string(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_travels_from_the_api_to_its_email_and_the_analytics() {
    spine_kit::testing::init_test_log();
    let broker = Broker::start();
    flow(&broker, &SchemaSettings::default(), async |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_on_confluent_framing_interoperates_with_confluents_own_client() {
    spine_kit::testing::init_test_log();
    let broker = Broker::start();
    let registry = TestRegistry::start().await;
    let schemas = SchemaSettings {
        framing: Framing::Confluent,
        registry: RegistrySettings {
            url: Some(registry.url()),
            ..RegistrySettings::default()
        },
        ..SchemaSettings::default()
    };
    let kafka = broker.kafka();
    let url = registry.url();
    flow(&broker, &schemas, async |stats_url: &str| {
        confluent_reads_what_spine_wrote(&kafka, &url);
        confluent_writes_what_spine_reads(&kafka, &url, stats_url).await;
    })
    .await;
}

/// Runs `tests/interop/confluent_roundtrip.py` and returns its stdout lines as JSON.
fn confluent_client(args: &[&str]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/confluent_roundtrip.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (scripts/setup installs it and confluent-kafka)");
    assert!(
        output.status.success(),
        "Confluent's client failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
        .collect()
}

fn confluent_reads_what_spine_wrote(kafka: &KafkaSettings, registry: &str) {
    let records = confluent_client(&[
        "read",
        "--bootstrap",
        &kafka.bootstrap_servers,
        "--registry",
        registry,
        "--count",
        "8",
        "--topics",
        "orders.events",
        "inventory.events",
        "email.events",
    ]);
    let mut names: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["topic"].as_str().unwrap(),
                r["record"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "email.events/EmailSent",
            "email.events/EmailSent",
            "inventory.events/StockReservationFailed",
            "inventory.events/StockReserved",
            "orders.events/OrderConfirmed",
            "orders.events/OrderPlaced",
            "orders.events/OrderPlaced",
            "orders.events/OrderRejected",
        ],
        "Confluent's AvroDeserializer reads every fact spine wrote: {records:?}"
    );
}

async fn confluent_writes_what_spine_reads(kafka: &KafkaSettings, registry: &str, stats_url: &str) {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/OrderPlaced.v2.avsc");
    let written = confluent_client(&[
        "write",
        "--bootstrap",
        &kafka.bootstrap_servers,
        "--registry",
        registry,
        "--schema",
        schema.to_str().unwrap(),
    ]);
    let order_id = written[0]["order_id"].as_str().unwrap().to_owned();
    // inventory reserves its stock (a StockReserved for that order) and analytics counts it.
    eventually(
        "inventory to react to Confluent's OrderPlaced",
        async || {
            let facts = spine_kit::testing::read_topic(
                kafka,
                "inventory.events",
                3,
                Duration::from_secs(2),
            );
            facts.iter().find_map(|fact| {
                let reserved: spine_events::inventory::StockReserved =
                    spine_events::decode(&fact.payload).ok()?;
                (reserved.order_id.to_string() == order_id).then_some(())
            })
        },
    )
    .await;
    eventually("analytics to count Confluent's OrderPlaced", async || {
        let stats: Value = reqwest::get(stats_url).await.ok()?.json().await.ok()?;
        (stats["events"]["OrderPlaced"] == 3).then_some(())
    })
    .await;
}

/// The flow on `broker` with every service on `schemas`; `more` runs once the flow's checks
/// passed, with the stack still up, given analytics' stats URL.
async fn flow(broker: &Broker, schemas: &SchemaSettings, more: impl AsyncFnOnce(&str)) {
    let data = tempfile::tempdir().unwrap();
    let emails = data.path().join("emails");

    let fast_outbox = || spine_kit::settings::OutboxSettings {
        poll_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let mut orders = spine_orders::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "orders"),
        outbox: fast_outbox(),
        schemas: schemas.clone(),
        ..Default::default()
    };
    orders.http.port = 0;
    let mut inventory = spine_inventory::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "inventory"),
        outbox: fast_outbox(),
        schemas: schemas.clone(),
        ..Default::default()
    };
    inventory.http.port = 0;
    let mut email = spine_email::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "email"),
        outbox: fast_outbox(),
        schemas: schemas.clone(),
        ..Default::default()
    };
    email.http.port = 0;
    email.email.outbox_dir = emails.clone();
    let mut analytics = spine_analytics::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "analytics"),
        schemas: schemas.clone(),
        ..Default::default()
    };
    analytics.http.port = 0;

    let stack = spine_dev::Stack::build(spine_dev::StackSettings {
        orders,
        inventory,
        email,
        analytics,
    })
    .await
    .expect("the services start");
    let ports = stack.ports();
    let orders_url = format!("http://127.0.0.1:{}", ports.orders);
    let stats_url = format!("http://127.0.0.1:{}/stats", ports.analytics);
    let token = CancellationToken::new();
    let stack = tokio::spawn(stack.run_until_stopped(token.clone(), Duration::from_secs(30)));

    let client = reqwest::Client::new();
    let place = |sku: &'static str, customer: &'static str| {
        let client = client.clone();
        let url = format!("{orders_url}/orders");
        async move {
            let response = client
                .post(url)
                .json(&json!({
                    "customer_id": customer,
                    "email": format!("{customer}@example.com"),
                    "currency": "EUR",
                    "items": [{ "sku": sku, "quantity": 2, "unit_price_minor": 1250 }]
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let in_stock = place("SKU-1", "ada").await;
    let out_of_stock = place("SKU-OUT", "bob").await;

    for (id, status) in [(&in_stock, "CONFIRMED"), (&out_of_stock, "REJECTED")] {
        eventually(&format!("order {id} {status}"), async || {
            let order: Value = client
                .get(format!("{orders_url}/orders/{id}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (order["status"] == status).then_some(())
        })
        .await;
    }
    let mail = eventually("two emails", async || {
        let mail = emails_in(&emails);
        (mail.len() >= 2).then_some(mail)
    })
    .await;
    // One analytics consumer follows every topic, and Kafka orders records only within a partition:
    // ada's OrderConfirmed (one partition of orders.events) can be counted after both EmailSent
    // (another topic). So wait for every count this test expects, not for the last fact to arrive.
    let fetch_stats =
        async || -> Option<Value> { client.get(&stats_url).send().await.ok()?.json().await.ok() };
    eventually(
        "analytics to see both orders, both outcomes and both emails",
        async || {
            let stats = fetch_stats().await?;
            let events = &stats["events"];
            (events["EmailSent"] == 2
                && events["OrderPlaced"] == 2
                && events["OrderConfirmed"] == 1
                && events["OrderRejected"] == 1
                && events["StockReserved"] == 1
                && events["StockReservationFailed"] == 1)
                .then_some(stats)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // anything duplicated would show by now
    let mail_after = emails_in(&emails);
    let stats = fetch_stats().await.expect("analytics answers its stats");
    let framing = schemas.framing;
    let facts = spine_kit::testing::read_topic(
        &broker.kafka(),
        "orders.events",
        4,
        Duration::from_secs(10),
    );
    assert!(
        !facts.is_empty()
            && facts
                .iter()
                .all(|f| Framing::of(&f.payload) == Some(framing)),
        "every fact on orders.events is in {framing:?}"
    );
    assert!(
        facts
            .iter()
            .all(|f| f.headers.get_str("content-type") == Some(framing.content_type())),
        "the content-type header names the framing"
    );

    assert_eq!(mail_after.len(), 2, "one email per order: {mail:?}");
    let to = |who: &str| {
        mail_after
            .iter()
            .filter(|(_, m)| m.contains(&format!("{who}@example.com")))
            .count()
    };
    assert_eq!((to("ada"), to("bob")), (1, 1));
    assert_eq!(stats["events"]["OrderPlaced"], 2, "{stats}");
    assert_eq!(stats["events"]["OrderConfirmed"], 1, "{stats}");
    assert_eq!(stats["events"]["StockReserved"], 1, "{stats}");
    assert_eq!(stats["events"]["StockReservationFailed"], 1, "{stats}");
    assert_eq!(stats["orders_by_status"]["CONFIRMED"], 1, "{stats}");
    assert_eq!(stats["orders_by_status"]["REJECTED"], 1, "{stats}");
    assert_eq!(stats["revenue"]["EUR"]["total_minor"], 2500, "{stats}");
    assert_eq!(stats["time_to_outcome_ms"]["count"], 2, "{stats}");

    more(&stats_url).await;
    token.cancel();
    stack.await.unwrap().unwrap();
}
