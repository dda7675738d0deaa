//! Error kinds shared by every crate.

/// Whether a failure may go away by itself (retry later, SMTP 4xx) or not (SMTP 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanence {
    Transient,
    Permanent,
}
