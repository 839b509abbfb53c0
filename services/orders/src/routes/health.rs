//! `GET /healthz` and `GET /readyz` for orders.
//!
//! Unlike the kit's [`spine_kit::http::health_router`], readiness here does **not** depend on
//! the broker. `POST /orders` only writes the database (the order and its outbox row in one
//! transaction); the relay publishes later. During a broker outage orders keep being accepted
//! until the outbox backlog reaches `outbox.max_backlog`, after which POST sheds with 503 and
//! `Retry-After`. Taking every pod out of its Service because the broker is down would turn
//! that outage into a full one, which is what the outbox exists to prevent. So `/readyz` is
//! 200 while the database answers and 503 when it doesn't; the outbox's backlog is reported
//! in the body for information, and the outbox alerts watch the relay.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AppState;

/// How long the database check may take: a probe must answer within its own timeout (the
/// k8s probes allow a few seconds) even when the pool waits for a dead server.
const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(ready))
}

async fn ready(State(state): State<AppState>) -> Response {
    let pool = state.store.outbox().pool();
    let db_ok = tokio::time::timeout(DB_CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool))
        .await
        .is_ok_and(|result| result.is_ok());
    let backlog = state.store.outbox().backlog();
    let (status, word) = if db_ok {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = json!({
        "status": word,
        "checks": { "database": word },
        "outbox": {
            "backlog_rows": backlog.rows(),
            "max_backlog": state.max_backlog,
            "oldest_age_seconds": backlog.oldest_age().as_secs(),
        },
    });
    (status, Json(body)).into_response()
}
