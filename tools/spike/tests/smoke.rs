//! The spike tool against the real thing: the four services in this process on a broker of
//! their own (`scripts/broker` on a free port), SQLite files and the email file transport in a
//! temporary directory, and the tool run as a library for a few seconds at a low rate.
//!
//! Timings are not asserted (the thresholds are loose on purpose): what is asserted is that
//! every accepted order is followed to its outcome and email, lag is sampled for every group,
//! the drain is measured, the files are written, and the exit codes follow the verdict.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use spine_kit::settings::{DatabaseSettings, OutboxSettings};
use spine_kit::testing::broker::Broker;
use tokio_util::sync::CancellationToken;

fn sqlite(dir: &Path, name: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: format!("sqlite://{}/{name}.db?mode=rwc", dir.display()).into(),
        ..DatabaseSettings::default()
    }
}

/// The four services, running until the token is cancelled.
struct Stack {
    orders_url: String,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_stack(broker: &Broker, data: &Path) -> Stack {
    let fast_outbox = || OutboxSettings {
        poll_interval: Duration::from_millis(100),
        ..OutboxSettings::default()
    };
    let mut orders = spine_orders::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data, "orders"),
        outbox: fast_outbox(),
        ..Default::default()
    };
    orders.http.port = 0;
    let mut inventory = spine_inventory::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data, "inventory"),
        outbox: fast_outbox(),
        ..Default::default()
    };
    inventory.http.port = 0;
    let mut email = spine_email::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data, "email"),
        outbox: fast_outbox(),
        ..Default::default()
    };
    email.http.port = 0;
    email.email.outbox_dir = data.join("emails");
    let mut analytics = spine_analytics::settings::Settings {
        kafka: broker.kafka(),
        database: sqlite(data, "analytics"),
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
    let orders_url = format!("http://127.0.0.1:{}", stack.ports().orders);
    let token = CancellationToken::new();
    let task = tokio::spawn(stack.run_until_stopped(token.clone(), Duration::from_secs(30)));
    Stack {
        orders_url,
        token,
        task,
    }
}

async fn spike(args: &[&str]) -> u8 {
    spine_spike::execute(
        std::iter::once("spike").chain(args.iter().copied()),
        CancellationToken::new(),
    )
    .await
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_spike_is_followed_to_every_outcome_and_email_and_drains() {
    spine_kit::testing::init_test_log();
    let broker = Broker::start();
    let data = tempfile::tempdir().unwrap();
    let stack = start_stack(&broker, data.path()).await;
    let bootstrap = broker.bootstrap();
    let run = data.path().join("run");
    let out = run.to_str().unwrap();

    // 5/s for 2 s, 15/s for 2 s, 5/s for 2 s: 50 orders for SKU-1/SKU-2 (100 units each),
    // every tenth for SKU-OUT. Thresholds loose enough for a busy 2-core machine; the first
    // group join on tansu alone takes several seconds, hence the drain allowance.
    let code = spike(&[
        "--base-url",
        &stack.orders_url,
        "--bootstrap-servers",
        &bootstrap,
        "--profile",
        "spike",
        "--rate",
        "5",
        "--spike-factor",
        "3",
        "--baseline",
        "2s",
        "--spike",
        "2s",
        "--recovery",
        "2s",
        "--reject-share",
        "0.1",
        "--drain-timeout",
        "120s",
        "--out",
        out,
        "--quiet",
        "--max-p99-ms",
        "10000",
        "--max-drain-s",
        "120",
        "--max-error-rate",
        "0",
        "--min-e2e-completion",
        "1",
    ])
    .await;

    let report = read_json(&run.join("report.json"));
    assert_eq!(code, 0, "the verdict passes: {:#}", report["verdict"]);
    let counts = &report["http"]["total"]["counts"];
    assert_eq!(counts["offered"], 50, "{counts}");
    let accepted = counts["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{counts}");
    for failure in [
        "dropped",
        "client_errors",
        "shed",
        "server_errors",
        "timeouts",
        "errors",
    ] {
        assert_eq!(counts[failure], 0, "no {failure}: {counts}");
    }
    assert_eq!(accepted, 50);

    let e2e = &report["e2e"]["total"];
    assert_eq!(e2e["accepted"], accepted, "{e2e}");
    assert_eq!(
        e2e["complete"], accepted,
        "every order got its outcome and email: {e2e}"
    );
    assert_eq!(e2e["emails"], accepted, "{e2e}");
    assert_eq!(
        e2e["rejected"], 5,
        "every tenth order was for SKU-OUT: {e2e}"
    );
    assert_eq!(e2e["confirmed"], 45, "{e2e}");
    assert!(e2e["outcome_latency_ms"]["p99_ms"].is_number(), "{e2e}");
    assert!(e2e["email_latency_ms"]["max_ms"].is_number(), "{e2e}");

    let groups: Vec<&str> = report["lag"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["orders", "inventory", "email", "analytics"]);
    let lag_series = report["lag_series"].as_array().unwrap();
    assert!(
        lag_series.len() >= 3,
        "lag sampled every second: {lag_series:?}"
    );
    for group in groups {
        assert!(
            lag_series.iter().any(|p| p["groups"][group].is_i64()),
            "lag samples for {group}"
        );
    }
    let drain = &report["drain"];
    assert_eq!(drain["reference"], "spike end");
    assert_eq!(drain["drained"], true, "{drain}");
    assert!(drain["drain_s"].is_number(), "{drain}");
    let series = report["series"].as_array().unwrap();
    assert!(series.len() >= 6, "one point a second: {series:?}");

    let svg = std::fs::read_to_string(run.join("chart.svg")).expect("chart.svg is written");
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<polyline").count(), 2 + 2 + 4);

    // An impossible threshold is missed: exit code 1, and the report says which.
    let second = data.path().join("second");
    let code = spike(&[
        "--base-url",
        &stack.orders_url,
        "--bootstrap-servers",
        &bootstrap,
        "--profile",
        "constant",
        "--rate",
        "5",
        "--duration",
        "1s",
        "--out",
        second.to_str().unwrap(),
        "--quiet",
        "--max-p99-ms",
        "0",
    ])
    .await;
    let report = read_json(&second.join("report.json"));
    assert_eq!(code, 1, "{:#}", report["verdict"]);
    assert_eq!(report["verdict"]["checks"][0]["flag"], "--max-p99-ms");
    assert_eq!(report["verdict"]["checks"][0]["passed"], false);

    stack.token.cancel();
    stack.task.await.unwrap().unwrap();
}
