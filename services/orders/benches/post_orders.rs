//! `POST /orders` latency under an open-model load: requests start on a fixed schedule whether
//! or not earlier ones finished, and latency is measured from the intended start, so a stall
//! can't hide behind the requests it delayed (no coordinated omission).
//!
//! ```sh
//! scripts/bench-orders                      # both backends, local broker and PostgreSQL
//! BENCH_BACKEND=postgres BENCH_RATE=300 BENCH_SECONDS=30 cargo bench -p spine-orders --bench post_orders
//! ```
//! Needs a broker (`KAFKA_BOOTSTRAP_SERVERS`, default 127.0.0.1:9092) and, for PostgreSQL,
//! `SPINE_TEST_POSTGRES_URL`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spine_kit::db::Backend;
use spine_orders::Application;
use spine_orders::settings::Settings;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let backend = match std::env::var("BENCH_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let rate: f64 = env("BENCH_RATE", 200.0);
    let seconds: f64 = env("BENCH_SECONDS", 20.0);
    let db = spine_kit::testing::fresh_database(backend).await;
    let mut settings = Settings::default();
    settings.http.port = 0;
    settings.database = db.settings.clone();
    settings.database.max_connections = 10;
    if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        settings.kafka.bootstrap_servers = servers;
    }
    settings.kafka.consumer.max_poll_interval = Duration::from_secs(6);
    settings.orders.consumer_group = spine_kit::testing::unique("bench-orders");
    let app = Application::build(settings).await?;
    let url = format!("http://127.0.0.1:{}/orders", app.port());
    let token = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(token.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let body = serde_json::json!({
        "customer_id": "bench",
        "email": "bench@example.com",
        "currency": "EUR",
        "items": [{ "sku": "SKU-1", "quantity": 1, "unit_price_minor": 999 }]
    });

    // Warm-up: connections, statement caches, the producer's metadata.
    run(&client, &url, &body, rate, 2.0).await;
    let started = Instant::now();
    let results = run(&client, &url, &body, rate, seconds).await;
    let elapsed = started.elapsed().as_secs_f64();

    let mut latencies: Vec<Duration> = results
        .iter()
        .filter(|(ok, _)| *ok)
        .map(|(_, l)| *l)
        .collect();
    latencies.sort();
    let failures = results.len() - latencies.len();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "backend={backend:?} offered={rate}/s for {seconds}s sent={} accepted_202={} failed={failures} achieved={:.0}/s",
        results.len(),
        latencies.len(),
        latencies.len() as f64 / elapsed
    );
    if !latencies.is_empty() {
        println!(
            "POST /orders latency from intended start: p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            ms(pct(0.50)),
            ms(pct(0.90)),
            ms(pct(0.99)),
            ms(pct(0.999)),
            ms(*latencies.last().unwrap())
        );
    }
    token.cancel();
    server.await??;
    Ok(())
}

/// Sends `rate` requests a second for `seconds`, each at its scheduled instant; returns
/// (answered 202, latency from the scheduled instant) per request.
async fn run(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    rate: f64,
    seconds: f64,
) -> Vec<(bool, Duration)> {
    let total = (rate * seconds) as usize;
    let results = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended).await;
        let (client, url, body, results) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            results.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ok =
                matches!(client.post(&url).json(&body).send().await, Ok(r) if r.status() == 202);
            results.lock().await.push((ok, intended.elapsed()));
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(results)
        .map(Mutex::into_inner)
        .unwrap_or_default()
}
