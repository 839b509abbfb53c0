//! The registry's answers in Confluent's error shape, with Confluent's codes.

use std::fmt;

use axum::http::StatusCode;

/// An answer in Confluent's error shape: an HTTP status, `{"error_code": .., "message": ..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// The HTTP status, e.g. 404.
    pub status: u16,
    /// Confluent's finer code, e.g. 40401 (subject not found).
    pub error_code: u32,
    /// The message.
    pub message: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP {} error_code {}: {}",
            self.status, self.error_code, self.message
        )
    }
}

impl std::error::Error for RegistryError {}

impl RegistryError {
    pub(super) fn new(status: StatusCode, error_code: u32, message: impl Into<String>) -> Self {
        Self {
            status: status.as_u16(),
            error_code,
            message: message.into(),
        }
    }

    pub(super) fn subject_not_found(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40401,
            format!("Subject '{subject}' not found."),
        )
    }

    pub(super) fn version_not_found(version: u32) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40402,
            format!("Version {version} not found."),
        )
    }

    pub(super) fn schema_not_found(id: Option<&str>) -> Self {
        let message = match id {
            Some(id) => format!("Schema {id} not found"),
            None => "Schema not found".to_owned(),
        };
        Self::new(StatusCode::NOT_FOUND, 40403, message)
    }

    pub(super) fn subject_level_not_configured(subject: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub(super) fn incompatible(subject: &str, messages: &[String]) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            40901,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \
                 \"{subject}\", details: [{}]",
                messages.join(", ")
            ),
        )
    }

    pub(super) fn invalid_schema(message: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            format!("Invalid schema: {message}"),
        )
    }

    pub(super) fn invalid_version(version: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are \
                 between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub(super) fn invalid_compatibility_level() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, \
             backward_transitive, forward_transitive, and full_transitive",
        )
    }
}
