//! Every SES failure, classified once. The SDK's errors differ per operation; what mailmux
//! needs from them is the same few questions: is it worth retrying (throttling, a 5xx, the
//! network), is it a verdict on this message (`MessageRejected`), does it stop the tenant's or
//! the account's sending (`SendingPausedException`, `AccountSuspendedException`), or is a
//! resource missing or already there (what idempotent provisioning branches on).
//!
//! The SES error code (`x-amzn-ErrorType`, which the SDK parses into each operation's typed
//! error and exposes as `code()`) decides; the HTTP status decides for codes we do not know.

use std::fmt;

use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};

/// What a failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SesErrorKind {
    /// Throttling, a server error, a timeout or the network: try again later.
    Transient,
    /// SES refused this message (`MessageRejected`): bounce it, with SES's reason.
    Rejected,
    /// The tenant's (or the whole account's) sending is stopped by SES: hold the mail and pause
    /// the tenant with the cause.
    SendingStopped,
    /// The resource named does not exist.
    NotFound,
    /// The resource to create exists already.
    AlreadyExists,
    /// Anything else SES refused (bad request, missing permission): retrying as is will not
    /// help, a person has to look.
    Permanent,
}

/// One failed SES call.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SesError {
    pub kind: SesErrorKind,
    /// The operation (`SendEmail`, `CreateTenant`…).
    pub operation: &'static str,
    /// SES's error code (`MessageRejected`, `TooManyRequestsException`…), when it gave one.
    pub code: Option<String>,
    /// SES's message, or the transport's description.
    pub message: String,
}

impl fmt::Display for SesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{}: {code}: {}", self.operation, self.message),
            None => write!(f, "{}: {}", self.operation, self.message),
        }
    }
}

impl SesError {
    /// The one mapping from the SDK's errors to ours.
    pub fn from_sdk<E>(operation: &'static str, error: SdkError<E>) -> SesError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (code, message, status) = match &error {
            SdkError::ServiceError(service) => (
                service.err().code().map(str::to_string),
                service
                    .err()
                    .message()
                    .map(str::to_string)
                    .unwrap_or_else(|| service.err().to_string()),
                Some(service.raw().status().as_u16()),
            ),
            // The request never got an answer SES wrote: dispatch (connect, TLS), timeout, or
            // a response that could not be read.
            SdkError::DispatchFailure(_)
            | SdkError::TimeoutError(_)
            | SdkError::ResponseError(_) => (None, describe(&error), None),
            // Building the request failed (no region, no credentials): ours to fix.
            _ => {
                return SesError {
                    kind: SesErrorKind::Permanent,
                    operation,
                    code: None,
                    message: describe(&error),
                };
            }
        };
        let kind = match (code.as_deref(), status) {
            (Some(code), status) => classify(code, status),
            (None, Some(status)) if status >= 500 || status == 429 => SesErrorKind::Transient,
            (None, Some(_)) => SesErrorKind::Permanent,
            (None, None) => SesErrorKind::Transient,
        };
        SesError {
            kind,
            operation,
            code,
            message,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == SesErrorKind::NotFound
    }

    pub fn is_already_exists(&self) -> bool {
        self.kind == SesErrorKind::AlreadyExists
    }
}

/// An SES error code (and the HTTP status it came with) to what it means.
fn classify(code: &str, status: Option<u16>) -> SesErrorKind {
    match code {
        "MessageRejected" | "MailFromDomainNotVerifiedException" => SesErrorKind::Rejected,
        "SendingPausedException" | "AccountSuspendedException" => SesErrorKind::SendingStopped,
        // LimitExceeded: the daily quota, or too many resources right now; both pass.
        "TooManyRequestsException"
        | "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "ConcurrentModificationException"
        | "InternalFailure"
        | "ServiceUnavailable" => SesErrorKind::Transient,
        "NotFoundException" => SesErrorKind::NotFound,
        "AlreadyExistsException" => SesErrorKind::AlreadyExists,
        _ => match status {
            Some(status) if status >= 500 || status == 429 => SesErrorKind::Transient,
            _ => SesErrorKind::Permanent,
        },
    }
}

/// The error and its sources on one line (the SDK's top-level text is often just
/// "dispatch failure").
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_what_delivery_and_provisioning_do() {
        let cases = [
            ("MessageRejected", Some(400), SesErrorKind::Rejected),
            (
                "SendingPausedException",
                Some(400),
                SesErrorKind::SendingStopped,
            ),
            (
                "AccountSuspendedException",
                Some(400),
                SesErrorKind::SendingStopped,
            ),
            (
                "TooManyRequestsException",
                Some(429),
                SesErrorKind::Transient,
            ),
            ("LimitExceededException", Some(400), SesErrorKind::Transient),
            ("NotFoundException", Some(404), SesErrorKind::NotFound),
            (
                "AlreadyExistsException",
                Some(400),
                SesErrorKind::AlreadyExists,
            ),
            ("BadRequestException", Some(400), SesErrorKind::Permanent),
            ("SomethingNew", Some(503), SesErrorKind::Transient),
            ("SomethingNew", Some(403), SesErrorKind::Permanent),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify(code, status), want, "{code}");
        }
    }
}
