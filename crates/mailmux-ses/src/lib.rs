//! mailmux-ses: the one place that speaks AWS SES v2 (aws-sdk-sesv2). Delivery sends through
//! it (`send.rs`, paced by `rate.rs`); `Ses::account` is the probe that the endpoint and the
//! credentials work. The SES resources a tenant owns are read and changed in `resources.rs`;
//! `sync.rs` provisions a whole tenant idempotently (each step's state in the store) and
//! mirrors its sending status; `sync_job.rs` runs due syncs in the background with backoff.
//!
//! One [`Ses`] per process (one client per credential set, built once at start-up and shared):
//! its HTTP client is rustls on ring, the TLS stack of the rest of the relay (`client.rs`).
//! Every SDK error becomes a [`SesError`] in one place (`error.rs`), which says whether it is
//! worth retrying and whether it stops the tenant's sending.

mod client;
mod error;
mod rate;
mod resources;
mod send;
mod sync;
mod sync_job;

pub use client::{Account, Ses};
pub use error::{SesError, SesErrorKind};
pub use rate::SendRate;
pub use resources::{Change, DkimChoice, IdentityState, ReputationState, SesTenant, sibling_arn};
pub use send::{MAX_RECIPIENTS_PER_SEND, RawSend};
pub use sync::{Provisioner, StepReport, SyncError, SyncReport};

pub type Result<T> = std::result::Result<T, SesError>;
