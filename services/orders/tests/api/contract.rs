//! The API contract: 202 with Location for a good order, a JSON 4xx naming the field for every
//! class of bad input, and nothing written for a rejected request.

use serde_json::{Value, json};
use spine_events::orders::OrderPlaced;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_valid_order_is_accepted_saved_and_published,
    bad_input_gets_a_json_4xx_naming_the_field_and_writes_nothing,
    unknown_and_malformed_order_ids_get_json_errors,
    health_and_metrics_answer,
);

async fn a_valid_order_is_accepted_saved_and_published(backend: Backend) {
    let app = spawn_app(backend).await;

    let response = app.post_order(&order_body()).await;

    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(location, format!("/orders/{id}"));

    let order: Value = app.get_order(&id).await.json().await.unwrap();
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["total_minor"], 3000);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["history"][0]["status"], "PENDING");

    let facts = facts_of(&app.settings.kafka, "orders.events", &id, 1);
    assert_eq!(facts.len(), 1, "one OrderPlaced on the topic");
    let placed: OrderPlaced =
        spine_events::decode(&facts[0].payload).expect("decodes with the events crate");
    assert_eq!(placed.order_id.to_string(), id);
    assert_eq!(placed.total_minor, 3000);
    assert_eq!(placed.email, "ada@example.com");
    app.stop().await;
}

async fn bad_input_gets_a_json_4xx_naming_the_field_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let with = |path: &str, value: Value| {
        let mut body = order_body();
        let mut target = &mut body;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            target = match part.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*part],
            };
        }
        target[parts[parts.len() - 1]] = value;
        body
    };
    let without = |field: &str| {
        let mut body = order_body();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown top-level field",
            with("coupon", json!("FREE")),
            422,
            "coupon",
        ),
        (
            "unknown item field",
            with("items.0.colour", json!("red")),
            422,
            "items[0].colour",
        ),
        ("missing field", without("email"), 422, "email"),
        (
            "wrong type",
            with("items.0.quantity", json!("two")),
            422,
            "items[0].quantity",
        ),
        (
            "zero quantity",
            with("items.1.quantity", json!(0)),
            422,
            "items[1].quantity",
        ),
        (
            "negative price",
            with("items.0.unit_price_minor", json!(-5)),
            422,
            "items[0].unit_price_minor",
        ),
        ("no items", with("items", json!([])), 422, "items"),
        (
            "too many items",
            with(
                "items",
                json!(vec![
                    json!({"sku": "S", "quantity": 1, "unit_price_minor": 1});
                    101
                ]),
            ),
            422,
            "items",
        ),
        (
            "implausible email",
            with("email", json!("ada@localhost")),
            422,
            "email",
        ),
        (
            "unknown currency",
            with("currency", json!("ZZZ")),
            422,
            "currency",
        ),
        (
            "empty sku",
            with("items.0.sku", json!("")),
            422,
            "items[0].sku",
        ),
    ];
    for (case, body, status, field) in cases {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), status, "{case}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_field", "{case}: {error}");
        assert_eq!(error["error"]["field"], field, "{case}: {error}");
    }

    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(format!("{}/orders", app.address))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = raw("{\"customer_id\": ", "application/json").await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "malformed_json"
    );
    let response = raw("customer_id=1", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );
    let huge = "x".repeat(app.settings.http.body_limit + 1);
    let response = app
        .client
        .post(format!("{}/orders", app.address))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "payload_too_large"
    );
    let response = app
        .post_order_with_key(&order_body(), &"k".repeat(300))
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["field"],
        "Idempotency-Key"
    );

    assert_eq!(app.count("orders").await, 0, "no order saved");
    assert_eq!(app.count("spine_outbox").await, 0, "no event enqueued");
    app.stop().await;
}

async fn unknown_and_malformed_order_ids_get_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get_order(&uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let response = app.get_order("not-a-uuid").await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["field"],
        "id"
    );
    app.stop().await;
}

async fn health_and_metrics_answer(backend: Backend) {
    // As main does, before the application resolves its metric handles (the write gate's).
    let _ = spine_kit::telemetry::metrics_handle();
    let app = spawn_app(backend).await;
    app.place().await;
    let get = |path: &'static str| app.client.get(format!("{}{path}", app.address)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["database"],
        "ok"
    );
    // The relay refreshes the backlog gauge each round.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = get("/metrics").await.unwrap().text().await.unwrap();
        if metrics.contains("spine_outbox_publish_latency_seconds_bucket") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for name in [
        "http_server_request_duration_seconds_bucket{method=\"POST\",route=\"/orders\",status=\"202\"",
        "spine_outbox_backlog_rows",
        "spine_outbox_oldest_age_seconds",
        "spine_outbox_publish_latency_seconds_bucket",
        "spine_outbox_quarantined_rows",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    // orders turns SQLite's write gate on unless told otherwise; PostgreSQL has none.
    let gated = metrics.contains("spine_db_write_gate_wait_seconds_bucket{role=\"edge\"");
    assert_eq!(gated, backend == Backend::Sqlite, "{metrics}");
    app.stop().await;
}
