//! The stock API: read, set, and JSON errors that name the field.

use serde_json::Value;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    stock_can_be_listed_read_and_set,
    bad_stock_requests_are_answered_with_json_errors,
);

async fn stock_can_be_listed_read_and_set(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, b, c] = app.skus.clone();

    let all = app.get("/stock").await;
    assert_eq!(all.status(), 200);
    let all: Vec<Value> = all.json().await.unwrap();
    let skus: Vec<&str> = all.iter().map(|s| s["sku"].as_str().unwrap()).collect();
    let mut expected = vec![a.as_str(), b.as_str(), c.as_str()];
    expected.sort_unstable();
    assert_eq!(skus, expected, "the seed, by SKU");

    let one = app.get(&format!("/stock/{c}")).await;
    assert_eq!(one.status(), 200);
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["available"], 1);
    assert_eq!(one["reserved"], 0);

    let set = app.put_stock(&c, r#"{"quantity": 42}"#).await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set["sku"], c.as_str());
    assert_eq!(set["available"], 42);
    assert_eq!(app.available(&c).await, 42);

    // PUT creates a SKU, and zero is a valid stock.
    let new = app.put_stock("SKU-NEW", r#"{"quantity": 0}"#).await;
    assert_eq!(new.status(), 200);
    assert_eq!(app.available("SKU-NEW").await, 0);
    app.stop().await;
}

async fn bad_stock_requests_are_answered_with_json_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let [a, _, _] = app.skus.clone();
    let cases = [
        (
            r#"{"quantity": -1}"#,
            422,
            "invalid_field",
            Some("quantity"),
        ),
        (
            r#"{"quantity": "ten"}"#,
            422,
            "invalid_field",
            Some("quantity"),
        ),
        (
            r#"{"quantity": 1.5}"#,
            422,
            "invalid_field",
            Some("quantity"),
        ),
        (r#"{}"#, 422, "invalid_field", Some("quantity")),
        (
            r#"{"quantity": 1, "extra": 2}"#,
            422,
            "invalid_field",
            Some("extra"),
        ),
        (r#"{"quantity": "#, 400, "malformed_json", None),
    ];
    for (body, status, code, field) in cases {
        let response = app.put_stock(&a, body).await;
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        if let Some(field) = field {
            assert_eq!(error["error"]["field"], field, "{body}: {error}");
        }
    }
    assert_eq!(
        app.available(&a).await,
        10,
        "no bad request changed the stock"
    );

    let missing = app.get("/stock/NO-SUCH-SKU").await;
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");

    let not_json = app
        .client
        .put(format!("{}/stock/{a}", app.address))
        .body(r#"{"quantity": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);

    let too_long = "X".repeat(65);
    let bad_sku = app.put_stock(&too_long, r#"{"quantity": 1}"#).await;
    assert_eq!(bad_sku.status(), 422);
    let error: Value = bad_sku.json().await.unwrap();
    assert_eq!(error["error"]["field"], "sku");
    app.stop().await;
}
