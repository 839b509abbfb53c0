//! The API's errors: each maps to a status and a JSON body; internals are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, unknown, of the wrong type or invalid.
    #[error("{field}: {message}")]
    InvalidField {
        /// Its JSON path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A header is invalid.
    #[error("header {header}: {message}")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is not `application/json`.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// The idempotency key was used before with another body.
    #[error("Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// No such order.
    #[error("no order {0}")]
    NotFound(String),
    /// The outbox backlog is over its bound: come back later.
    #[error("overloaded: {backlog} events wait to be published; retry later")]
    Overloaded {
        /// Unpublished rows.
        backlog: i64,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The database is down or cannot serve now (`spine_kit::db::is_outage`): 503 with
    /// `Retry-After`, so that clients retry with the same Idempotency-Key.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: logged, answered as a bare 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::InvalidField { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
            Self::InvalidHeader { .. } => (StatusCode::BAD_REQUEST, "invalid_header"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Db(err) if spine_kit::db::is_outage(&err) => {
                Self::Unavailable(err)
            }
            err => Self::Internal(err.into()),
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
                tracing::warn!(error = %err, "database unavailable");
                return spine_kit::http::unavailable_response(&self);
            }
            _ => {}
        }
        let field = match &self {
            Self::InvalidField { field, .. } => Some(field.as_str()),
            Self::InvalidHeader { header, .. } => Some(*header),
            _ => None,
        };
        let mut response = spine_kit::http::error_response(status, code, &self, field);
        if let Self::Overloaded {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_database_outage_is_a_503_with_retry_after_and_other_failures_a_500() {
        let outage = ApiError::from(StoreError::Db(sqlx::Error::PoolTimedOut)).into_response();
        assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(outage.headers().contains_key(header::RETRY_AFTER));
        let failure = ApiError::from(StoreError::Db(sqlx::Error::RowNotFound)).into_response();
        assert_eq!(failure.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!failure.headers().contains_key(header::RETRY_AFTER));
    }
}
