//! `GET /api/tenants/{id}/usage`: what a tenant uses against its limits. Every number is
//! counted from the database at request time, so it is exact after a restart and the same on
//! every node.

use axum::Json;
use axum::extract::{Path, State};
use mailmux_core::now_ms;
use mailmux_store::Store;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::dkim::start_of_utc_day;
use crate::error::{ErrorBody, Result};
use crate::state::AdminState;
use crate::views::LimitsView;

const DAY_MS: i64 = 86_400_000;
const MB: u64 = 1024 * 1024;

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageCounts {
    /// Live SMTP credentials (counted against max_users).
    pub users: u64,
    pub domains: u64,
    /// Message content stored now, in MiB, rounded up.
    pub storage_mb: u64,
    /// Messages accepted since 00:00 UTC today.
    pub messages_today: u64,
    /// Messages accepted in the last 24 hours: what max_messages_per_day is checked against.
    pub messages_24h: u64,
    /// Messages waiting for delivery now.
    pub queued: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub tenant_id: String,
    pub usage: UsageCounts,
    pub limits: LimitsView,
}

pub async fn usage(store: &Store, tenant_id: &str) -> Result<Usage> {
    let tenant = crate::lookup::tenant(store, tenant_id).await?;
    let now = now_ms();
    // Queued mail and stored inbound mail both count towards max_storage_mb.
    let bytes = store.stored_bytes(tenant_id).await? + store.inbound_bytes(tenant_id).await?;
    Ok(Usage {
        tenant_id: tenant.id.clone(),
        usage: UsageCounts {
            users: store.count_credentials(tenant_id).await?,
            domains: store.count_domains(tenant_id).await?,
            storage_mb: bytes.div_ceil(MB),
            messages_today: store
                .count_messages_since(tenant_id, start_of_utc_day(now))
                .await?,
            messages_24h: store.count_messages_since(tenant_id, now - DAY_MS).await?,
            queued: store.queue_depth(Some(tenant_id)).await?,
        },
        limits: tenant.limits.into(),
    })
}

/// Usage against limits.
#[utoipa::path(
    get, path = "/api/tenants/{id}/usage", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = Usage), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn tenant_usage(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Usage>> {
    principal.scope(&id)?;
    Ok(Json(usage(&state.store, &id).await?))
}
