//! `--demo`: places a few orders, one of them out of stock, and prints each order's journey:
//! its status history, its email, and the trace id it was placed under.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// (customer, sku, quantity): SKU-OUT has no stock, so its order is rejected.
const ORDERS: &[(&str, &str, i32)] = &[
    ("ada", "SKU-1", 2),
    ("grace", "SKU-2", 1),
    ("linus", "SKU-OUT", 1),
];

pub async fn run(orders_url: &str, emails_dir: &Path, tracing_on: bool) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    wait_until_ready(&client, orders_url).await?;
    let mut placed = Vec::new();
    for (customer, sku, quantity) in ORDERS {
        // The demo is the caller: it starts the trace, so it knows the trace id.
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
        let response = client
            .post(format!("{orders_url}/orders"))
            .header("traceparent", format!("00-{trace_id}-{span_id}-01"))
            .json(&json!({
                "customer_id": customer,
                "email": format!("{customer}@example.com"),
                "currency": "EUR",
                "items": [{ "sku": sku, "quantity": quantity, "unit_price_minor": 1250 }]
            }))
            .send()
            .await
            .context("POST /orders")?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 202 {
            bail!("POST /orders answered {status}: {body}");
        }
        placed.push((
            body["id"].as_str().unwrap_or_default().to_owned(),
            *customer,
            *sku,
            trace_id,
        ));
    }
    println!("\ndemo: placed {} orders; following them...", placed.len());
    for (id, customer, sku, trace_id) in placed {
        let order = wait_for_outcome(&client, orders_url, &id).await?;
        let history: Vec<String> = order["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|t| match t["reason"].as_str() {
                        Some(reason) => {
                            format!("{} ({reason})", t["status"].as_str().unwrap_or("?"))
                        }
                        None => t["status"].as_str().unwrap_or("?").to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let email = wait_for_email(emails_dir, &id).await;
        println!("order {id}  {customer} buys {sku}");
        println!("  journey  {}", history.join(" -> "));
        println!("  email    {}", email.as_deref().unwrap_or("none yet"));
        println!(
            "  trace    {trace_id}{}",
            if tracing_on {
                ""
            } else {
                "  (set OTEL_EXPORTER_OTLP_ENDPOINT to export it)"
            }
        );
    }
    Ok(())
}

async fn wait_until_ready(client: &reqwest::Client, orders_url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{orders_url}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("orders was not ready within 60 s")
}

async fn wait_for_outcome(
    client: &reqwest::Client,
    orders_url: &str,
    id: &str,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let order: Value = client
            .get(format!("{orders_url}/orders/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if order["status"] != "PENDING" || Instant::now() > deadline {
            return Ok(order);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The .eml file that mentions the order, once the email service wrote it.
async fn wait_for_email(dir: &Path, order_id: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if std::fs::read_to_string(&path).is_ok_and(|text| text.contains(order_id)) {
                    return Some(path.display().to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}
