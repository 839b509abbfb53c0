//! The open-model load: `POST /orders` at each arrival of the schedule, whether or not the
//! earlier requests have finished.
//!
//! Each request is timed from its intended start, so a slow API or a stalled client shows in
//! full rather than hiding behind the requests it delayed (no coordinated omission). When
//! `--max-in-flight` requests are already waiting, a request that comes due is counted as
//! *dropped* (the client is saturated) instead of being delayed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::profile::{Profile, schedule};
use crate::record::{Recorder, RequestResult, Tracker};

/// A SKU no inventory holds: orders for it are rejected, which exercises that path.
pub const OUT_OF_STOCK_SKU: &str = "SKU-OUT";

/// Makes the request bodies: one line of one unit, customers and SKUs in rotation, and a
/// share of orders for [`OUT_OF_STOCK_SKU`].
#[derive(Debug, Clone)]
pub struct Bodies {
    skus: Vec<String>,
    reject_share: f64,
    customers: u64,
}

impl Bodies {
    /// Bodies cycling through `skus` and `customers` customers, with `reject_share` (0 to 1)
    /// of the orders for [`OUT_OF_STOCK_SKU`].
    pub fn new(skus: Vec<String>, reject_share: f64, customers: u64) -> Self {
        Self {
            skus,
            reject_share,
            customers: customers.max(1),
        }
    }

    /// Whether request `index` orders the out-of-stock SKU: spread evenly, exactly
    /// `reject_share` of every run of requests (up to rounding).
    pub fn rejects(&self, index: u64) -> bool {
        let share = self.reject_share;
        ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
    }

    /// The SKU of request `index`.
    pub fn sku(&self, index: u64) -> &str {
        if self.rejects(index) || self.skus.is_empty() {
            OUT_OF_STOCK_SKU
        } else {
            &self.skus[(index % self.skus.len() as u64) as usize]
        }
    }

    /// The JSON body of request `index`.
    pub fn body(&self, index: u64) -> String {
        let customer = index % self.customers + 1;
        serde_json::json!({
            "customer_id": format!("c-{customer}"),
            "email": format!("c-{customer}@example.com"),
            "currency": "EUR",
            "items": [{ "sku": self.sku(index), "quantity": 1, "unit_price_minor": 1250 }]
        })
        .to_string()
    }
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// The HTTP client (its timeout is the per-request timeout).
    pub client: reqwest::Client,
    /// `<base-url>/orders`.
    pub url: String,
    /// The bodies.
    pub bodies: Bodies,
    /// Requests allowed to wait at once before new ones are dropped.
    pub max_in_flight: usize,
}

impl Target {
    /// A target at `base_url` with a client that gives up on a request after `timeout`.
    pub fn new(
        base_url: &str,
        bodies: Bodies,
        timeout: Duration,
        max_in_flight: usize,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            url: format!("{}/orders", base_url.trim_end_matches('/')),
            bodies,
            max_in_flight,
        })
    }
}

/// What the load reports to: outcomes, orders to follow, and how many requests wait.
#[derive(Clone)]
pub struct Sinks {
    /// Counts and latencies.
    pub recorder: Arc<Recorder>,
    /// Accepted orders to follow, when the run follows them.
    pub tracker: Option<Arc<Mutex<Tracker>>>,
    /// Requests sent and not yet ended.
    pub in_flight: Arc<AtomicUsize>,
}

/// Offers `profile`'s load from `start` until the schedule ends or `cancel` fires, then waits
/// for every request still out (each is bounded by the client's timeout).
pub async fn drive(
    profile: Profile,
    target: Arc<Target>,
    sinks: Sinks,
    start: Instant,
    cancel: CancellationToken,
) {
    let tokio_start = tokio::time::Instant::from_std(start);
    for arrival in schedule(&profile) {
        tokio::select! {
            () = tokio::time::sleep_until(tokio_start + arrival.at) => {}
            () = cancel.cancelled() => break,
        }
        if sinks.in_flight.load(Ordering::Acquire) >= target.max_in_flight {
            sinks.recorder.offered(arrival.phase, arrival.at, false);
            continue;
        }
        sinks.recorder.offered(arrival.phase, arrival.at, true);
        sinks.in_flight.fetch_add(1, Ordering::AcqRel);
        let (target, sinks) = (target.clone(), sinks.clone());
        tokio::spawn(async move {
            let (result, id) = send(&target, arrival.index).await;
            let done = start.elapsed();
            // Follow the order before counting the request as ended, so that "nothing in
            // flight and nothing incomplete" can't be seen in between.
            if let (RequestResult::Accepted, Some(tracker)) = (&result, &sinks.tracker) {
                let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
                match id {
                    Some(id) => tracker.accepted(id, arrival.phase, start + arrival.at),
                    None => tracker.untracked(),
                }
            }
            sinks
                .recorder
                .completed(arrival.phase, arrival.at, done, &result);
            sinks.in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
    while sinks.in_flight.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends request `index`; a 202's order id comes from its body.
async fn send(target: &Target, index: u64) -> (RequestResult, Option<Uuid>) {
    let response = target
        .client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(target.bodies.body(index))
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(e) => return (transport_error(&e), None),
    };
    let status = response.status().as_u16();
    // Read the body in every case, so the connection goes back to the pool.
    let body = response.bytes().await;
    match (status, body) {
        (202, Ok(body)) => (RequestResult::Accepted, order_id(&body)),
        (202, Err(e)) => (transport_error(&e), None),
        (status, _) => (RequestResult::Status(status), None),
    }
}

fn transport_error(e: &reqwest::Error) -> RequestResult {
    if e.is_timeout() {
        RequestResult::Timeout
    } else {
        RequestResult::Error
    }
}

/// The `id` of a 202 body, `{"id": "…", "status": "PENDING"}`.
pub fn order_id(body: &[u8]) -> Option<Uuid> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Uuid::parse_str(value.get("id")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_rotate_customers_and_skus() {
        let bodies = Bodies::new(vec!["SKU-1".into(), "SKU-2".into()], 0.0, 3);
        let body: serde_json::Value = serde_json::from_str(&bodies.body(0)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "customer_id": "c-1", "email": "c-1@example.com", "currency": "EUR",
                "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_minor": 1250}]
            })
        );
        let skus: Vec<&str> = (0..4).map(|i| bodies.sku(i)).collect();
        assert_eq!(skus, ["SKU-1", "SKU-2", "SKU-1", "SKU-2"]);
        assert!(bodies.body(3).contains("\"c-1\""), "customers wrap after 3");
        assert!(bodies.body(4).contains("\"c-2\""));
    }

    #[test]
    fn the_reject_share_is_exact_and_spread_out() {
        let bodies = Bodies::new(vec!["SKU-1".into()], 0.25, 10);
        let out: Vec<u64> = (0..12).filter(|i| bodies.rejects(*i)).collect();
        assert_eq!(out, [3, 7, 11]);
        assert_eq!(bodies.sku(3), OUT_OF_STOCK_SKU);
        let none = Bodies::new(vec!["SKU-1".into()], 0.0, 10);
        assert!((0..1000).all(|i| !none.rejects(i)));
        let all = Bodies::new(vec!["SKU-1".into()], 1.0, 10);
        assert!((0..1000).all(|i| all.rejects(i)));
        let tenth = Bodies::new(vec!["SKU-1".into()], 0.1, 10);
        assert_eq!((0..1000).filter(|i| tenth.rejects(*i)).count(), 100);
    }

    #[test]
    fn the_order_id_is_read_from_the_accepted_body() {
        let id = Uuid::now_v7();
        let body = format!(r#"{{"id":"{id}","status":"PENDING"}}"#);
        assert_eq!(order_id(body.as_bytes()), Some(id));
        assert_eq!(order_id(b"{}"), None);
        assert_eq!(order_id(b"not json"), None);
    }
}
