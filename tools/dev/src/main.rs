//! `spine-dev`: the local stack on embedded defaults. Run it through `scripts/dev`, which
//! starts the broker first.
//!
//! It provisions every topic named by the schema catalog, runs each service in this process
//! on its own port and SQLite file under `.spine/dev/`, prints where everything is, and stops
//! them all on Ctrl-C: orders (:8080), inventory (:8081), email (:8082, file transport into
//! `.spine/dev/emails/`) and analytics (:8083).
//!
//! `--demo` then places a few orders (one out of stock) and prints each one's journey.
//!
//! # Layout
//! - `main.rs`: settings, topic provisioning, the services, the summary, shutdown;
//! - `demo.rs`: the `--demo` orders and their journeys;
//! - `lib.rs` ([`spine_dev::Stack`]): the four services in one process, shared with the tests.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use spine_dev::{Stack, StackSettings};
use spine_kit::kafka::{TopicSpec, ensure_topics};

mod demo;

/// Where the services' SQLite files live, relative to the repository root.
const DATA_DIR: &str = ".spine/dev";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut orders: spine_orders::settings::Settings = load("orders")?;
    let mut inventory: spine_inventory::settings::Settings = load("inventory")?;
    let mut email: spine_email::settings::Settings = load("email")?;
    let mut analytics: spine_analytics::settings::Settings = load("analytics")?;
    let _telemetry = spine_kit::telemetry::init_telemetry(
        "spine-dev",
        env!("CARGO_PKG_VERSION"),
        &orders.telemetry,
    )?;
    std::fs::create_dir_all(DATA_DIR).with_context(|| format!("creating {DATA_DIR}"))?;
    // Each service gets a SQLite file of its own unless DATABASE_URL names a server.
    if std::env::var_os("DATABASE_URL").is_none() {
        orders.database.url = sqlite("orders");
        inventory.database.url = sqlite("inventory");
        email.database.url = sqlite("email");
        analytics.database.url = sqlite("analytics");
    }
    let emails_dir = std::path::Path::new(DATA_DIR).join("emails");
    email.email.outbox_dir = emails_dir.clone();

    let kafka = orders.kafka.clone();
    let topics: BTreeSet<&str> = spine_events::catalog()
        .entries()
        .iter()
        .map(|entry| entry.topic())
        .collect();
    let specs: Vec<TopicSpec> = topics.iter().map(|t| TopicSpec::new(*t, &kafka)).collect();
    ensure_topics(&kafka, &specs)
        .await
        .with_context(|| format!("provisioning topics on {}", kafka.bootstrap_servers))?;

    let stack = Stack::build(StackSettings {
        orders,
        inventory,
        email,
        analytics,
    })
    .await?;
    let ports = stack.ports();
    let (orders_port, inventory_port) = (ports.orders, ports.inventory);
    let (email_port, analytics_port) = (ports.email, ports.analytics);

    println!("spine local stack");
    println!("  broker     {}", kafka.bootstrap_servers);
    for topic in &topics {
        let events: Vec<String> = spine_events::catalog()
            .entries()
            .iter()
            .filter(|e| e.topic() == *topic)
            .map(|e| format!("{} v{}", e.name(), e.version()))
            .collect();
        println!("  topic      {topic:<18} {}", events.join(", "));
    }
    println!("  orders     http://127.0.0.1:{orders_port}/orders");
    println!("  inventory  http://127.0.0.1:{inventory_port}/stock");
    println!(
        "  email      http://127.0.0.1:{email_port}/readyz  (emails land in {})",
        emails_dir.display()
    );
    println!("  analytics  http://127.0.0.1:{analytics_port}/stats");
    println!("  databases  {DATA_DIR}/*.db");
    println!();
    println!("Place an order:");
    println!(
        "  curl -i -X POST http://127.0.0.1:{orders_port}/orders -H 'content-type: application/json' \\\n    -d '{{\"customer_id\":\"c-1\",\"email\":\"ada@example.com\",\"currency\":\"EUR\",\"items\":[{{\"sku\":\"SKU-1\",\"quantity\":2,\"unit_price_minor\":1250}}]}}'"
    );
    println!("Press Ctrl-C to stop.");

    if std::env::args().any(|arg| arg == "--demo") {
        let orders_url = format!("http://127.0.0.1:{orders_port}");
        let emails_dir = emails_dir.clone();
        let tracing_on = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        tokio::spawn(async move {
            if let Err(err) = demo::run(&orders_url, &emails_dir, tracing_on).await {
                eprintln!("demo failed: {err:#}");
            }
        });
    }
    stack
        .run_until_stopped(
            spine_kit::shutdown::token_on_signal(),
            Duration::from_secs(30),
        )
        .await
}

fn load<T: serde::de::DeserializeOwned>(service: &str) -> anyhow::Result<T> {
    spine_kit::config::load().with_context(|| format!("loading {service} settings"))
}

fn sqlite(service: &str) -> secrecy::SecretString {
    format!("sqlite://{DATA_DIR}/{service}.db?mode=rwc").into()
}
