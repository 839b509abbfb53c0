//! The API's errors: each maps to a status and a JSON body; internals are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field (or the SKU in the path) is missing, unknown, of the wrong type or invalid.
    #[error("{field}: {message}")]
    InvalidField {
        /// Its JSON path, or `sku` for the path parameter.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// No such SKU.
    #[error("no stock for SKU {0}")]
    NotFound(String),
    /// Anything else: logged, answered as a bare 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::domain::Invalid> for ApiError {
    fn from(err: crate::domain::Invalid) -> Self {
        Self::InvalidField {
            field: err.field,
            message: err.message,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(err.into())
    }
}

impl ApiError {
    /// The answer to a refused JSON body; `limit` is the configured body limit.
    pub fn from_body(err: spine_kit::http::BodyError, limit: usize) -> Self {
        use spine_kit::http::BodyError;
        match err {
            BodyError::UnsupportedMediaType => Self::UnsupportedMediaType,
            BodyError::TooLarge => Self::PayloadTooLarge(limit),
            BodyError::Malformed(message) => Self::MalformedJson(message),
            BodyError::InvalidField { field, message } => Self::InvalidField { field, message },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        let field = match &self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            _ => None,
        };
        spine_kit::http::error_response(status, code, &self, field)
    }
}
