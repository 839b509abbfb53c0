//! HTTP routes: health, readiness and metrics (the service has no API of its own).

use axum::Router;
use axum::middleware;

use crate::AppState;

/// Health, readiness and metrics, with per-request observation.
pub fn router(state: AppState) -> Router {
    let health = spine_kit::http::health_router(
        state.store.outbox().pool().clone(),
        state.publisher.inner().clone(),
    );
    Router::new()
        .merge(health)
        .with_state(state)
        .merge(spine_kit::telemetry::metrics_router())
        .layer(middleware::from_fn(spine_kit::http::observe))
}
