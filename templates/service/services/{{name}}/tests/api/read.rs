//! `GET /{{name}}/orders/{id}`: a recorded order as JSON, JSON errors otherwise.

use std::time::{Duration, Instant};

use serde_json::Value;
use spine_kit::db::Backend;
use uuid::Uuid;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_recorded_order_is_served_as_json,
    an_unknown_order_is_a_json_404_and_a_bad_id_a_json_422,
);

async fn a_recorded_order_is_served_as_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let order = placed();
    let path = format!("/{{name}}/orders/{}", order.order_id);

    app.publish(&order).await;

    // The consumer is asynchronous: poll until the order is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        let response = app.get(&path).await;
        if response.status() != 404 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["order_id"], order.order_id.to_string());
    assert_eq!(body["customer_id"], "customer-42");
    assert_eq!(body["total_minor"], 3_000);
    assert_eq!(body["currency"], "EUR");
    assert!(body["recorded_at"].as_i64().unwrap() > 0, "{body}");
    app.stop().await;
}

async fn an_unknown_order_is_a_json_404_and_a_bad_id_a_json_422(backend: Backend) {
    let app = spawn_app(backend).await;

    let missing = app
        .get(&format!("/{{name}}/orders/{}", Uuid::now_v7()))
        .await;
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    let bad = app.get("/{{name}}/orders/not-a-uuid").await;
    assert_eq!(bad.status(), 422);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_field", "{error}");
    assert_eq!(error["error"]["field"], "id", "{error}");
    app.stop().await;
}
