//! `POST /orders` and `GET /orders/{id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use crate::AppState;
use crate::domain::{NewOrder, OrderRequest, OrderStatus};
use crate::store::Placed;

/// The header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The orders routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
}

/// Validates, saves the order and its OrderPlaced in one transaction, answers 202.
#[tracing::instrument(skip_all)]
async fn place_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let backlog = state.store.outbox().backlog();
    if backlog.rows() >= state.max_backlog {
        metrics::counter!("orders_shed_total").increment(1);
        return Err(ApiError::Overloaded {
            backlog: backlog.rows(),
            retry_after_secs: state.retry_after_secs,
        });
    }
    let request: OrderRequest = spine_kit::http::parse_json(&headers, body)
        .map_err(|e| ApiError::from_body(e, state.body_limit))?;
    let key = idempotency_key(&headers)?;
    let order = NewOrder::parse(&request).map_err(|e| ApiError::InvalidField {
        field: e.field,
        message: e.message,
    })?;
    // The canonical form of the request: what an idempotent repeat must match.
    let canonical = serde_json::to_string(&request).map_err(|e| ApiError::Internal(e.into()))?;
    let (id, status) = match state
        .store
        .place(&order, &canonical, key.as_deref())
        .await?
    {
        Placed::Created { id } => (id, OrderStatus::Pending),
        Placed::Existing { id, status } => (id, status),
        Placed::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    let location = format!("/orders/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(json!({ "id": id, "status": status })),
    )
        .into_response())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = |message: &str| ApiError::InvalidHeader {
        header: "Idempotency-Key",
        message: message.to_owned(),
    };
    let value = value
        .to_str()
        .map_err(|_| invalid("must be visible ASCII"))?
        .trim();
    if value.is_empty() || value.len() > 255 {
        return Err(invalid("must be 1 to 255 characters"));
    }
    Ok(Some(value.to_owned()))
}

/// The order with its lines and status history.
#[tracing::instrument(skip_all, fields(order.id = %id))]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::InvalidField {
        field: "id".into(),
        message: format!("`{id}` is not a UUID"),
    })?;
    match state.store.get(id).await? {
        Some(order) => Ok(Json(order).into_response()),
        None => Err(ApiError::NotFound(id.to_string())),
    }
}
