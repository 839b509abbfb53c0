//! Liveness and readiness.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use rdkafka::producer::Producer as _;
use serde_json::json;

use crate::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
}

/// Ready when the database answers and the broker's metadata can be fetched.
async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let db = sqlx::query("SELECT 1")
        .execute(state.store.outbox().pool())
        .await;
    let producer = state.publisher.inner().clone();
    let broker = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(2))
            .map(|_| ())
    })
    .await;
    let db_ok = db.is_ok();
    let broker_ok = matches!(broker, Ok(Ok(())));
    let status = if db_ok && broker_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let check = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": check(db_ok && broker_ok),
            "checks": { "database": check(db_ok), "broker": check(broker_ok) },
        })),
    )
}
