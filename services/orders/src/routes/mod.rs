//! HTTP routes.

pub mod error;
pub mod health;
pub mod orders;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

use crate::AppState;

/// The whole API: orders, health, metrics, with the body limit and per-request observation.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    Router::new()
        .merge(orders::router())
        .merge(health::router())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
        .merge(spine_kit::telemetry::metrics_router())
        .layer(middleware::from_fn(spine_kit::http::observe))
}
