//! `/healthz`: each part of the process and the database, and 503 when any of them is not
//! working (load balancers take the node out). The one route that needs no token.
//!
//! The parts report themselves (`mailmux_core::health`): the queue writer after each commit,
//! the scheduler after each claim, the supervisor when a background task panicked and was
//! restarted. The database is asked here, at each request, so an idle node whose database
//! went away is still reported.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AdminState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when any component failed.
    pub status: String,
    /// By name (`database`, `queue_writer`, `scheduler`, `lease_heartbeat`, `delivery`, …).
    #[schema(value_type = Object)]
    pub components: BTreeMap<&'static str, mailmux_core::health::ComponentState>,
}

/// Health of each component and of the database; no token needed.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "A component has failed (see `components`)", body = Health),
    )
)]
pub async fn healthz(State(state): State<AdminState>) -> (StatusCode, Json<Health>) {
    let database = state.health.component("database");
    match state.store.ping().await {
        Ok(()) => database.ok(),
        Err(error) => {
            tracing::warn!(%error, "health check: database unavailable");
            database.failed(format!("unreachable: {error}"));
        }
    }
    let report = state.health.report();
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: report.status.to_string(),
            components: report.components,
        }),
    )
}
