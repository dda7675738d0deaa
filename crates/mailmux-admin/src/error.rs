//! Admin errors and the one place they become HTTP statuses and `{"error": {"code","message"}}`.
//!
//! Messages are written for the person calling the API. Storage, key and resolver failures keep
//! their details for the log: a client never sees SQL, file paths or a stack trace.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailmux_policy::{Refusal, RejectReason};
use mailmux_store::{KeyVaultError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

pub type Result<T> = std::result::Result<T, AdminError>;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Malformed request: JSON that does not parse or does not fit (the message names the
    /// field), a bad query parameter or cursor.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A valid token that may not do this (a tenant key on an operator-only route). Never used
    /// for another tenant's resources: those are `NotFound`, so nothing leaks their existence.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// No route at this path (the router's fallback).
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// A tenant limit would be exceeded (max_users, max_domains…).
    #[error("{0}")]
    LimitExceeded(String),
    /// Well-formed but unacceptable input (bad domain name, empty name…).
    #[error("{0}")]
    Invalid(String),
    #[error("storage is unavailable")]
    Storage(#[source] StoreError),
    /// The submission policy refused a send (the same refusal SMTP answers with a reply); its
    /// class picks the status: 429 for rate and quota, 403 for rights, status and features,
    /// 413 for size, 422 for the rest, 503 for storage.
    #[error("{}", .0.reply.lines().join(" "))]
    Refused(Refusal),
    /// Something on our side that the client cannot fix (key generation, master key, DNS
    /// resolver set-up); the detail goes to the log.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service mailmux relies on (SES) failed or refused; the message says which call and why.
    #[error("{0}")]
    Upstream(String),
}

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `payload_too_large`, `limit_exceeded`, `invalid`, …
    pub code: String,
    /// For a person.
    pub message: String,
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => AdminError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => AdminError::Conflict(format!("{what} already exists")),
            StoreError::LimitReached(why) => AdminError::LimitExceeded(why),
            StoreError::InUse(why) => AdminError::Conflict(why),
            other => AdminError::Storage(other),
        }
    }
}

impl From<mailmux_ses::SyncError> for AdminError {
    fn from(error: mailmux_ses::SyncError) -> Self {
        match error {
            mailmux_ses::SyncError::Store(store) => store.into(),
            mailmux_ses::SyncError::NoTenant(id) => {
                AdminError::NotFound(format!("tenant {id} not found"))
            }
        }
    }
}

impl From<Refusal> for AdminError {
    fn from(refusal: Refusal) -> Self {
        AdminError::Refused(refusal)
    }
}

impl From<KeyVaultError> for AdminError {
    fn from(error: KeyVaultError) -> Self {
        tracing::error!(%error, "master key");
        AdminError::Internal("the key store is unavailable".into())
    }
}

impl From<JsonRejection> for AdminError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            // serde_path_to_error inside axum: the text names the field and what was expected.
            JsonRejection::JsonDataError(e) => AdminError::BadRequest(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => AdminError::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => AdminError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                AdminError::PayloadTooLarge(crate::BODY_LIMIT)
            }
            other => AdminError::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for AdminError {
    fn from(rejection: QueryRejection) -> Self {
        AdminError::BadRequest(rejection.body_text())
    }
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) | AdminError::NoRoute(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::LimitExceeded(_) | AdminError::Invalid(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            AdminError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Upstream(_) => StatusCode::BAD_GATEWAY,
            AdminError::Refused(refusal) => match refusal.reason {
                RejectReason::Quota | RejectReason::Rate => StatusCode::TOO_MANY_REQUESTS,
                RejectReason::Tenant
                | RejectReason::Sender
                | RejectReason::Feature
                | RejectReason::Auth
                | RejectReason::Relay => StatusCode::FORBIDDEN,
                RejectReason::Size => StatusCode::PAYLOAD_TOO_LARGE,
                RejectReason::Storage => StatusCode::SERVICE_UNAVAILABLE,
                RejectReason::Recipients
                | RejectReason::Content
                | RejectReason::Connection
                | RejectReason::Protocol => StatusCode::UNPROCESSABLE_ENTITY,
            },
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest(_) => "bad_request",
            AdminError::Unauthorized => "unauthorized",
            AdminError::Forbidden(_) => "forbidden",
            AdminError::NotFound(_) => "not_found",
            AdminError::NoRoute(_) => "no_route",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Conflict(_) => "conflict",
            AdminError::PayloadTooLarge(_) => "payload_too_large",
            AdminError::UnsupportedMediaType => "unsupported_media_type",
            AdminError::LimitExceeded(_) => "limit_exceeded",
            AdminError::Invalid(_) => "invalid",
            AdminError::Storage(_) => "storage_unavailable",
            AdminError::Internal(_) => "internal",
            AdminError::Upstream(_) => "upstream_failed",
            AdminError::Refused(refusal) => match refusal.reason {
                RejectReason::Quota => "quota_exceeded",
                RejectReason::Rate => "rate_limited",
                RejectReason::Tenant => "tenant_not_sending",
                RejectReason::Sender => "sender_not_allowed",
                RejectReason::Feature => "feature_disabled",
                RejectReason::Size => "message_too_large",
                RejectReason::Recipients => "too_many_recipients",
                RejectReason::Content => "content_refused",
                RejectReason::Storage => "storage_unavailable",
                RejectReason::Auth
                | RejectReason::Relay
                | RejectReason::Connection
                | RejectReason::Protocol => "refused",
            },
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match &self {
            // The details go to the log, never to the client (no SQL in responses).
            AdminError::Storage(source) => {
                tracing::error!(error = %source, "admin request failed on storage")
            }
            AdminError::Internal(what) => tracing::error!(%what, "admin request failed"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let AdminError::Refused(Refusal {
            retry_after: Some(wait),
            ..
        }) = &self
        {
            // RFC 9110 §10.2.3: whole seconds, rounded up so a client that waits exactly this
            // long is not refused again.
            let seconds = wait.as_millis().div_ceil(1000).max(1);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&seconds.to_string()).expect("digits are a header value"),
            );
        }
        if matches!(self, AdminError::Unauthorized) {
            // RFC 6750 §3: tell the client which scheme to use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mailmux\""),
            );
        }
        response
    }
}
