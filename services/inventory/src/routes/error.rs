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
    /// The database is down or cannot serve now (`spine_kit::db::is_outage`): logged,
    /// answered 503 with `Retry-After`, so that clients and load balancers back off and retry.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
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
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
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
        if spine_kit::db::is_outage(&err) {
            Self::Unavailable(err.into())
        } else {
            Self::Internal(err.into())
        }
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
        match &self {
            Self::Internal(err) => tracing::error!(error = format!("{err:#}"), "request failed"),
            Self::Unavailable(err) => {
                tracing::warn!(error = format!("{err:#}"), "database unavailable");
            }
            _ => {}
        }
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
        assert_eq!(
            outage.headers().get(axum::http::header::RETRY_AFTER),
            Some(&axum::http::HeaderValue::from_static("1"))
        );
        let failure = ApiError::from(sqlx::Error::RowNotFound).into_response();
        assert_eq!(failure.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            failure
                .headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }
}
