//! mailmux-admin: the control plane. The REST API (axum) over the store, `/healthz`, and the
//! provisioning logic the CLI shares with it.

pub mod error;
mod health;
pub mod provision;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use mailmux_core::Config;
use mailmux_store::Store;

pub use error::{AdminError, Result};

/// What every handler can reach.
#[derive(Clone)]
pub struct AdminState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The operator bearer token in force (configured or generated).
    pub operator_token: Arc<String>,
}

/// The admin listener's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .with_state(state)
}
