//! `GET /stock`, `GET /stock/{sku}` and `PUT /stock/{sku}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
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
    let request: StockRequest = spine_kit::http::parse_json(&headers, body)
        .map_err(|e| ApiError::from_body(e, state.body_limit))?;
    let quantity = Quantity::parse(request.quantity)?;
    let view = state.store.set(&sku, quantity).await?;
    tracing::info!(available = view.available, "stock set");
    Ok(Json(view))
}
