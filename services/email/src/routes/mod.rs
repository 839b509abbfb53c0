//! HTTP routes: health, readiness and metrics (the service has no API of its own).

pub mod health;

use axum::Router;
use axum::middleware;

use crate::AppState;

/// Health, readiness and metrics, with per-request observation.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .with_state(state)
        .merge(spine_kit::telemetry::metrics_router())
        .layer(middleware::from_fn(spine_kit::http::observe))
}
