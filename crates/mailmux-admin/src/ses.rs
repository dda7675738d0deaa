//! `/api/tenants/{id}/ses[/sync]`: a tenant's SES side as the last sync left it, and a sync
//! run now. The provisioning itself is mailmux-ses's (`Provisioner`, the one place that
//! speaks SES); this file shows its state and puts HTTP around it.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_core::Config;
use mailmux_core::config::TransportKind;
use mailmux_ses::{Provisioner, SyncReport};
use mailmux_store::Store;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{AdminError, ErrorBody, Result};
use crate::lookup;
use crate::state::AdminState;

/// One provisioning step's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct SesStepView {
    /// `tenant`, `configuration_set`, `identity:DOMAIN`, `mail_from:DOMAIN`,
    /// `association:identity:DOMAIN`, `association:configuration_set`, `reputation_policy`…
    pub step: String,
    /// `done` or `error`.
    pub status: String,
    pub last_error: Option<String>,
    /// When the step last changed state (Unix ms).
    pub updated_at: i64,
}

/// `GET /api/tenants/{id}/ses`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SesView {
    pub tenant_name: String,
    /// SES's TenantId, once created.
    pub aws_tenant_id: Option<String>,
    /// `synced` (every step done), `pending` (not synced yet, or a domain is waiting for its
    /// identity) or `error` (a step failed; the background sync retries it with backoff).
    pub status: String,
    pub steps: Vec<SesStepView>,
    /// SES's SendingStatus of the tenant as last read: `ENABLED`, `REINSTATED`, `DISABLED`.
    pub sending_status: Option<String>,
    /// `standard`, `strict` or `none`.
    pub reputation_policy: String,
    /// Failed syncs in a row.
    pub failures: u32,
    /// Last successful sync, next sync due (Unix ms).
    pub synced_at: Option<i64>,
    pub next_sync_at: Option<i64>,
}

// ---- operations (shared with the CLI) ------------------------------------------------------

/// The tenant's SES state as stored.
pub async fn show(store: &Store, config: &Config, tenant_id: &str) -> Result<SesView> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    let record = store.get_ses_tenant(&tenant.id).await?;
    let steps = store.list_ses_steps(&tenant.id).await?;
    let domains = store.list_domains(&tenant.id).await?;
    let failed = steps.iter().any(|s| s.status == "error");
    let waiting = domains.iter().any(|d| {
        let step = format!("identity:{}", d.name);
        !steps.iter().any(|s| s.step == step && s.status == "done")
    });
    let synced = record.as_ref().is_some_and(|r| r.synced_at.is_some());
    let status = if failed {
        "error"
    } else if !synced || waiting {
        "pending"
    } else {
        "synced"
    };
    Ok(SesView {
        tenant_name: record.as_ref().map_or_else(
            || config.ses.tenant_name(&tenant.id),
            |r| r.tenant_name.clone(),
        ),
        aws_tenant_id: record.as_ref().and_then(|r| r.aws_tenant_id.clone()),
        status: status.into(),
        steps: steps
            .into_iter()
            .map(|s| SesStepView {
                step: s.step,
                status: s.status,
                last_error: s.last_error,
                updated_at: s.updated_at,
            })
            .collect(),
        sending_status: record.as_ref().and_then(|r| r.sending_status.clone()),
        reputation_policy: tenant.reputation_policy.as_str().into(),
        failures: record.as_ref().map_or(0, |r| r.failures),
        synced_at: record.as_ref().and_then(|r| r.synced_at),
        next_sync_at: record.as_ref().map(|r| r.next_sync_at),
    })
}

/// Syncs the tenant now and answers with its state after the run (a failed step shows as
/// `error` and is retried in the background). 422 for a tenant not on the `ses` transport:
/// creating SES resources for mail that does not go through SES is a mistake to point out.
pub async fn sync(
    provisioner: &Provisioner,
    config: &Config,
    tenant_id: &str,
) -> Result<(SyncReport, SesView)> {
    let tenant = lookup::tenant(&provisioner.store, tenant_id).await?;
    let transport = tenant.transport.unwrap_or(config.delivery.transport);
    if transport != TransportKind::Ses {
        return Err(AdminError::Invalid(format!(
            "tenant {} sends through {}, not ses; set \"transport\": \"ses\" first",
            tenant.id,
            transport.as_str()
        )));
    }
    let report = provisioner.sync(&tenant.id, false).await?;
    Ok((report, show(&provisioner.store, config, &tenant.id).await?))
}

fn provisioner(state: &AdminState) -> Result<&Provisioner> {
    state
        .ses
        .as_deref()
        .ok_or_else(|| AdminError::Internal("SES is not wired in this process".into()))
}

// ---- handlers -------------------------------------------------------------------------------

/// The tenant's SES tenant and the state of each provisioning step.
#[utoipa::path(
    get, path = "/api/tenants/{id}/ses", tag = "ses",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = SesView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_ses(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SesView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &state.config, &id).await?))
}

/// Provisions the tenant's SES side now (idempotent: what is right is left as it is).
#[utoipa::path(
    post, path = "/api/tenants/{id}/ses/sync", tag = "ses",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "Synced, or `status: error` with the failed step", body = SesView),
        (status = 404, body = ErrorBody),
        (status = 422, description = "The tenant is not on the ses transport", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn sync_ses(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<SesView>> {
    principal.scope(&id)?;
    // An unknown tenant is 404 whether or not SES is wired here.
    lookup::tenant(&state.store, &id).await?;
    let (_, view) = sync(provisioner(&state)?, &state.config, &id).await?;
    Ok(Json(view))
}
