//! `spine-dev`: the local stack on embedded defaults. Run it through `scripts/dev`, which
//! starts the broker first.
//!
//! It provisions every topic named by the schema catalog, runs each service in this process
//! on its own port and SQLite file under `.spine/dev/`, prints where everything is, and stops
//! them all on Ctrl-C. Services join as they land; today that is orders.
//!
//! # Layout
//! - `main.rs`: settings, topic provisioning, the services, the summary, shutdown.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use spine_kit::kafka::{TopicSpec, ensure_topics};
use spine_kit::shutdown::Supervisor;

/// Where the services' SQLite files live, relative to the repository root.
const DATA_DIR: &str = ".spine/dev";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut orders: spine_orders::settings::Settings =
        spine_kit::config::load().context("loading settings")?;
    let _telemetry = spine_kit::telemetry::init_telemetry(
        "spine-dev",
        env!("CARGO_PKG_VERSION"),
        &orders.telemetry,
    )?;
    std::fs::create_dir_all(DATA_DIR).with_context(|| format!("creating {DATA_DIR}"))?;
    if std::env::var_os("DATABASE_URL").is_none() {
        orders.database.url = format!("sqlite://{DATA_DIR}/orders.db?mode=rwc").into();
    }
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

    let orders_app = spine_orders::Application::build(orders)
        .await
        .context("starting orders")?;
    let orders_port = orders_app.port();

    println!("spine local stack");
    println!("  broker    {}", kafka.bootstrap_servers);
    for topic in &topics {
        let events: Vec<String> = spine_events::catalog()
            .entries()
            .iter()
            .filter(|e| e.topic() == *topic)
            .map(|e| format!("{} v{}", e.name(), e.version()))
            .collect();
        println!("  topic     {topic:<18} {}", events.join(", "));
    }
    println!("  orders    http://127.0.0.1:{orders_port}  (database {DATA_DIR}/orders.db)");
    println!("  pending   inventory, email and analytics land in later releases");
    println!();
    println!("Place an order:");
    println!(
        "  curl -i -X POST http://127.0.0.1:{orders_port}/orders -H 'content-type: application/json' \\\n    -d '{{\"customer_id\":\"c-1\",\"email\":\"ada@example.com\",\"currency\":\"EUR\",\"items\":[{{\"sku\":\"SKU-1\",\"quantity\":2,\"unit_price_minor\":1250}}]}}'"
    );
    println!("Press Ctrl-C to stop.");

    let mut supervisor = Supervisor::new(spine_kit::shutdown::token_on_signal());
    let token = supervisor.token();
    supervisor.spawn("orders", orders_app.run_until_stopped(token));
    supervisor.run(Duration::from_secs(20)).await?;
    Ok(())
}
