//! `spine-dev`: the local stack on embedded defaults. Run it through `scripts/dev`, which
//! starts the broker first.
//!
//! Today it provisions every topic named by the schema catalog (each producer's topic, with
//! the configured partitions), prints where everything is, and waits for Ctrl-C. The services
//! join it as they land.
//!
//! # Layout
//! - `main.rs`: settings, topic provisioning, the summary and the wait for shutdown.

use std::collections::BTreeSet;

use anyhow::Context;
use spine_kit::kafka::{TopicSpec, ensure_topics};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: spine_kit::KitSettings = spine_kit::config::load().context("loading settings")?;
    let _telemetry = spine_kit::telemetry::init_telemetry(
        "spine-dev",
        env!("CARGO_PKG_VERSION"),
        &settings.telemetry,
    )?;
    let kafka = &settings.kafka;
    let topics: BTreeSet<&str> = spine_events::catalog()
        .entries()
        .iter()
        .map(|entry| entry.topic())
        .collect();
    let specs: Vec<TopicSpec> = topics.iter().map(|t| TopicSpec::new(*t, kafka)).collect();
    ensure_topics(kafka, &specs)
        .await
        .with_context(|| format!("provisioning topics on {}", kafka.bootstrap_servers))?;

    println!("spine local stack");
    println!("  broker   {}", kafka.bootstrap_servers);
    for topic in &topics {
        let events: Vec<String> = spine_events::catalog()
            .entries()
            .iter()
            .filter(|e| e.topic() == *topic)
            .map(|e| format!("{} v{}", e.name(), e.version()))
            .collect();
        println!("  topic    {topic:<18} {}", events.join(", "));
    }
    println!("  services none yet: orders, inventory, email and analytics land in later releases");
    println!("Press Ctrl-C to stop.");
    spine_kit::shutdown::shutdown_signal().await;
    Ok(())
}
