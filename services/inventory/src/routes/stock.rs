//! `GET /stock`, `GET /stock/{sku}` and `PUT /stock/{sku}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};

use super::error::ApiError;
use crate::AppState;
use crate::domain::{Quantity, Sku, StockRequest};
use crate::store::StockView;

/// The stock routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/stock", get(all_stock))
        .route("/stock/{sku}", get(get_stock).put(set_stock))
}

/// Every SKU, by SKU.
async fn all_stock(State(state): State<AppState>) -> Result<Json<Vec<StockView>>, ApiError> {
    Ok(Json(state.store.all().await?))
}

/// One SKU, or 404.
#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn get_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    let sku = Sku::parse(&sku)?;
    match state.store.get(&sku).await? {
        Some(view) => Ok(Json(view)),
        None => Err(ApiError::NotFound(sku.as_str().to_owned())),
    }
}

/// Sets the available units of a SKU (creating it if new); reservations already held are kept.
#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn set_stock(
    State(state): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StockView>, ApiError> {
    let sku = Sku::parse(&sku)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.body_limit)
        } else {
            ApiError::MalformedJson(rejection.body_text())
        }
    })?;
    let request = parse_request(&body)?;
    let quantity = Quantity::parse(request.quantity)?;
    let view = state.store.set(&sku, quantity).await?;
    tracing::info!(available = view.available, "stock set");
    Ok(Json(view))
}

/// Parses the body, naming the field at fault: `quantity: invalid type …`.
fn parse_request(body: &[u8]) -> Result<StockRequest, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::MalformedJson(inner.to_string())
        } else {
            ApiError::InvalidField {
                // `.` is the root: the error is about a missing or unknown top-level field.
                field: if path == "." {
                    field_in(&inner.to_string())
                } else {
                    path
                },
                message: inner.to_string(),
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(request)
}

/// The field serde names in "missing field `x`" or "unknown field `x`", for root-level errors.
fn field_in(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .map_or_else(|| ".".to_owned(), str::to_owned)
}
