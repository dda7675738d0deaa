//! Admin errors and the one place they become HTTP statuses and `{"error": {"code","message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailmux_store::StoreError;

pub type Result<T> = std::result::Result<T, AdminError>;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A tenant limit would be exceeded (max_users, max_domains…).
    #[error("{0}")]
    LimitExceeded(String),
    /// Well-formed but unacceptable input (bad domain name, unknown tier…).
    #[error("{0}")]
    Invalid(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("storage is unavailable")]
    Storage(#[source] StoreError),
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => AdminError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => AdminError::Conflict(format!("{what} already exists")),
            other => AdminError::Storage(other),
        }
    }
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::LimitExceeded(_) | AdminError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::LimitExceeded(_) => "limit_exceeded",
            AdminError::Invalid(_) => "invalid",
            AdminError::Unauthorized => "unauthorized",
            AdminError::Storage(_) => "storage_unavailable",
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let AdminError::Storage(source) = &self {
            // The details go to the log, never to the client (no SQL in responses).
            tracing::error!(error = %source, "admin request failed on storage");
        }
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        (self.status(), Json(body)).into_response()
    }
}
