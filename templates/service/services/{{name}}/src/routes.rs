//! HTTP: `GET /{{name}}/orders/{id}`, the health probes and `/metrics`; errors as JSON.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use uuid::Uuid;

use crate::AppState;
use crate::store::OrderView;

/// The whole API, with per-request observation (server span, latency histogram).
pub fn router(state: AppState) -> Router {
    let health =
        spine_kit::http::health_router(state.store.pool().clone(), state.publisher.inner().clone());
    // TODO(your domain): your routes. Keep handlers small: parse, call the store, answer.
    Router::new()
        .route("/{{name}}/orders/{id}", get(get_order))
        .merge(health)
        .with_state(state)
        .merge(spine_kit::telemetry::metrics_router())
        .layer(middleware::from_fn(spine_kit::http::observe))
}

/// One recorded order: 200 with it, 404 if this service has not recorded it (yet).
#[tracing::instrument(skip_all, fields(order.id = %id))]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let order_id: Uuid = id.parse().map_err(|_| ApiError::InvalidField {
        field: "id".into(),
        message: "not a UUID".into(),
    })?;
    match state.store.order(order_id).await {
        Ok(Some(order)) => Ok(Json(order)),
        Ok(None) => Err(ApiError::NotFound(order_id)),
        Err(err) => Err(ApiError::from(err)),
    }
}

/// An error answered to an HTTP client: a status and `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A path parameter is invalid.
    #[error("{field}: {message}")]
    InvalidField {
        /// Which parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such order.
    #[error("no order {0}")]
    NotFound(Uuid),
    /// The database is down or cannot serve now (`spine_kit::db::is_outage`): logged,
    /// answered 503 with `Retry-After`, so that clients and load balancers back off and retry.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: logged, answered as a bare 500 that leaks nothing.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if spine_kit::db::is_outage(&err) {
            Self::Unavailable(err.into())
        } else {
            Self::Internal(err.into())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unavailable(err) => {
                tracing::warn!(error = format!("{err:#}"), "database unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let field = match &self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            _ => None,
        };
        if matches!(self, Self::Unavailable(_)) {
            return spine_kit::http::unavailable_response(&self);
        }
        spine_kit::http::error_response(status, code, &self, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_outage_is_a_503_with_retry_after_and_other_failures_a_500() {
        let outage = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            outage
                .headers()
                .contains_key(axum::http::header::RETRY_AFTER)
        );
        let failure = ApiError::from(sqlx::Error::RowNotFound).into_response();
        assert_eq!(failure.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
