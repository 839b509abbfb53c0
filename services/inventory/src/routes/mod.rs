//! HTTP routes.

pub mod error;
pub mod stock;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

use crate::AppState;

/// The whole API: stock, health, metrics, with the body limit and per-request observation.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let health = spine_kit::http::health_router(
        state.store.outbox().pool().clone(),
        state.publisher.inner().clone(),
    );
    Router::new()
        .merge(stock::router())
        .merge(health)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .merge(spine_kit::telemetry::metrics_router())
        .layer(middleware::from_fn(spine_kit::http::observe))
}
