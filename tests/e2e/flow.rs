//! The whole flow, all four services in this process on a broker of their own (started with
//! `scripts/broker` on a free port, so no other test's facts reach them): an order in stock is
//! confirmed and one out of stock rejected; each customer gets one email; analytics counts each
//! fact once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spine_kit::settings::DatabaseSettings;
use spine_kit::testing::broker::Broker;
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
        ..Default::default()
    };
    orders.http.port = 0;
    let mut inventory = spine_inventory::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "inventory"),
        outbox: fast_outbox(),
        ..Default::default()
    };
    inventory.http.port = 0;
    let mut email = spine_email::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "email"),
        outbox: fast_outbox(),
        ..Default::default()
    };
    email.http.port = 0;
    email.email.outbox_dir = emails.clone();
    let mut analytics = spine_analytics::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data.path(), "analytics"),
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
    let stats = eventually(
        "analytics to see both outcomes and both emails",
        async || {
            let stats: Value = client
                .get(&stats_url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (stats["events"]["EmailSent"] == 2 && stats["events"]["OrderRejected"] == 1)
                .then_some(stats)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // anything duplicated would show by now
    let mail_after = emails_in(&emails);
    token.cancel();
    stack.await.unwrap().unwrap();

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
}
