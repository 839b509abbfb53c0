//! `Idempotency-Key`: a repeat returns the first order; a different body under the same key is
//! a 422.

use serde_json::Value;
use spine_kit::db::Backend;

use crate::support::*;

spine_kit::on_sqlite_and_postgres!(
    a_repeated_request_returns_the_same_order_and_a_changed_one_is_refused
);

async fn a_repeated_request_returns_the_same_order_and_a_changed_one_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = uuid::Uuid::new_v4().to_string();

    let first = app.post_order_with_key(&order_body(), &key).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Retried concurrently, as a client with a short timeout would.
    let body = order_body();
    let (a, b) = tokio::join!(
        app.post_order_with_key(&body, &key),
        app.post_order_with_key(&body, &key)
    );
    for repeat in [a, b] {
        assert_eq!(repeat.status(), 202);
        let repeat: Value = repeat.json().await.unwrap();
        assert_eq!(repeat["id"], first["id"], "the same order");
    }

    let mut changed = order_body();
    changed["items"][0]["quantity"] = 3.into();
    let refused = app.post_order_with_key(&changed, &key).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["code"],
        "idempotency_key_reused"
    );

    assert_eq!(app.count("orders").await, 1, "one order");
    assert_eq!(app.count("spine_outbox").await, 1, "one OrderPlaced");
    app.stop().await;
}
