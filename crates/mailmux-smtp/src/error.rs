//! Errors that end a session: I/O on the connection, the TLS handshake, a peer that stopped
//! reading. Refusals of commands are not errors: they are replies (see [`crate::policy`]).

pub type Result<T> = std::result::Result<T, SmtpError>;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("peer did not {0} in time")]
    Timeout(&'static str),
}
