//! mailmux-smtp: the SMTP listeners and sessions, where mail enters mailmux.
//!
//! Three listeners share one [`Server`] context: submission with STARTTLS, submission with
//! implicit TLS, and MX. Each connection runs a session (`session.rs`) — a state machine over any
//! `AsyncRead + AsyncWrite` stream, driven by smtp-proto's command parser — that dispatches
//! to one handler per verb (`ehlo.rs`, `starttls.rs`, `auth.rs`, `mail.rs`, `rcpt.rs`,
//! `data.rs`, `simple.rs`; envelope address syntax in `address.rs`). Policy decisions (tenant
//! status, sender rights, limits, rates, quota) are values computed by
//! [`mailmux_policy::Policy`], which the HTTP send API shares; the MX relay rule is in
//! [`policy`]. An accepted message gets a `Received:` header and is answered `250` only once
//! [`mailmux_queue::Queue::enqueue`] made it durable.

mod address;
mod auth;
mod context;
mod data;
mod data_decoder;
mod ehlo;
mod error;
mod guards;
mod input;
mod mail;
pub mod metrics;
pub mod policy;
mod rcpt;
mod server;
mod session;
mod simple;
mod starttls;

pub use context::Listener;
pub use context::Server;
pub use error::{Result, SmtpError};
/// One reply type for the whole relay (`mailmux_core::reply`): a policy refusal carries the
/// reply it is answered with.
pub use mailmux_core::reply::{self, Reply};
pub use metrics::{Metrics, RejectReason};
pub use server::{Listeners, serve};
