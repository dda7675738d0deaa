//! `/api/tenants/{id}/credentials[/{credential_id}]`: SMTP users. The password is generated,
//! returned once and stored only as a hash. Revoking takes effect at the credential's next
//! AUTH on any node: the SMTP side re-reads credentials with at most a second of caching. A
//! credential may have its own sending rate (`PUT`), applied on top of its tenant's; it takes
//! effect within a second (the same cache).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::{generate_secret, hash_secret, random_id};
use mailmux_core::{Credential, now_ms};
use mailmux_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery};
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;
use crate::views::Success;

/// A new SMTP credential; the password exists only in this answer (the store keeps a hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct NewCredential {
    pub id: String,
    pub tenant_id: String,
    /// SMTP AUTH user name.
    pub username: String,
    /// Shown only this once.
    pub password: String,
    pub created_at: i64,
}

/// A credential without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub tenant_id: String,
    pub username: String,
    pub created_at: i64,
    /// When it was revoked (Unix ms); null while it works.
    pub revoked_at: Option<i64>,
    /// This credential's own rate (messages per second), on top of its tenant's; null: none.
    pub rate_per_second: Option<u64>,
    /// This credential's own rate (messages per minute); null: none.
    pub rate_per_minute: Option<u64>,
}

impl From<&Credential> for CredentialView {
    fn from(c: &Credential) -> Self {
        CredentialView {
            id: c.id.clone(),
            tenant_id: c.tenant_id.clone(),
            username: c.username.clone(),
            created_at: c.created_at,
            revoked_at: c.revoked_at,
            rate_per_second: c.rate_per_second,
            rate_per_minute: c.rate_per_minute,
        }
    }
}

/// `PUT /api/tenants/{id}/credentials/{credential_id}`: the credential's own sending rate.
/// Both fields are set as given (null or absent: none of its own). It can only narrow what the
/// tenant may send: the tenant's rate still applies.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCredential {
    pub rate_per_second: Option<u64>,
    pub rate_per_minute: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialList {
    pub credentials: Vec<CredentialView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!("credential {id} not found"))
}

// ---- operations (shared with the CLI) ------------------------------------------------------

/// Creates an SMTP credential, refused (422) when the tenant has `max_users` live ones.
pub async fn create(store: &Store, actor: &Actor, tenant_id: &str) -> Result<NewCredential> {
    let tenant = crate::lookup::tenant(store, tenant_id).await?;
    let password = generate_secret();
    let credential = Credential {
        id: random_id("c_", 16),
        tenant_id: tenant.id.clone(),
        username: random_id("mm_", 20),
        secret_hash: hash_secret(&password),
        created_at: now_ms(),
        revoked_at: None,
        rate_per_second: None,
        rate_per_minute: None,
    };
    let audit = crate::audit_log::entry(
        actor,
        Some(&tenant.id),
        "credential.create",
        &credential.id,
        None,
        Some(serde_json::to_value(CredentialView::from(&credential)).expect("serialises")),
    );
    // The store counts and inserts in one transaction: exact under concurrent requests.
    store
        .create_credential(&credential, tenant.limits.max_users, Some(&audit))
        .await?;
    Ok(NewCredential {
        id: credential.id,
        tenant_id: credential.tenant_id,
        username: credential.username,
        password,
        created_at: credential.created_at,
    })
}

pub async fn show(store: &Store, tenant_id: &str, id: &str) -> Result<CredentialView> {
    crate::lookup::tenant(store, tenant_id).await?;
    let credential = store
        .get_credential(tenant_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(CredentialView::from(&credential))
}

pub async fn list(store: &Store, tenant_id: &str, page: &PageQuery) -> Result<CredentialList> {
    crate::lookup::tenant(store, tenant_id).await?;
    let limit = page.limit()?;
    let after = pagination::decode_time_id(page.cursor.as_deref())?;
    let rows = store
        .list_credentials_page(tenant_id, after, limit + 1)
        .await?;
    let (rows, next) = pagination::split_page(rows, limit, |c| {
        pagination::encode_time_id(c.created_at, &c.id)
    });
    Ok(CredentialList {
        credentials: rows.iter().map(CredentialView::from).collect(),
        next_cursor: next,
    })
}

/// Revokes a credential. Revoking one already revoked succeeds and changes nothing.
pub async fn revoke(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
) -> Result<CredentialView> {
    crate::lookup::tenant(store, tenant_id).await?;
    let before = store
        .get_credential(tenant_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    if before.revoked_at.is_some() {
        return Ok(CredentialView::from(&before));
    }
    let after = Credential {
        revoked_at: Some(now_ms()),
        ..before.clone()
    };
    let (before_view, after_view) = (CredentialView::from(&before), CredentialView::from(&after));
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "credential.revoke",
        id,
        Some(serde_json::to_value(&before_view).expect("serialises")),
        Some(serde_json::to_value(&after_view).expect("serialises")),
    );
    let revoked_at = after.revoked_at.expect("set above");
    if store
        .revoke_credential(tenant_id, id, revoked_at, Some(&audit))
        .await?
    {
        return Ok(after_view);
    }
    // Revoked meanwhile by another request (which logged it): show what it stored.
    let now = store
        .get_credential(tenant_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(CredentialView::from(&now))
}

/// Sets a credential's own sending rate (0 is read as "none of its own").
pub async fn update(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
    update: &UpdateCredential,
) -> Result<CredentialView> {
    crate::lookup::tenant(store, tenant_id).await?;
    let before = store
        .get_credential(tenant_id, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let own = |rate: Option<u64>| rate.filter(|r| *r > 0);
    let (per_second, per_minute) = (own(update.rate_per_second), own(update.rate_per_minute));
    let after = Credential {
        rate_per_second: per_second,
        rate_per_minute: per_minute,
        ..before.clone()
    };
    let (before, after) = (CredentialView::from(&before), CredentialView::from(&after));
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "credential.update",
        id,
        Some(serde_json::to_value(&before).expect("serialises")),
        Some(serde_json::to_value(&after).expect("serialises")),
    );
    if !store
        .set_credential_rates(tenant_id, id, per_second, per_minute, Some(&audit))
        .await?
    {
        return Err(not_found(id));
    }
    Ok(after)
}

// ---- handlers -------------------------------------------------------------------------------

/// Creates an SMTP credential; the password is in this answer only.
#[utoipa::path(
    post, path = "/api/tenants/{id}/credentials", tag = "credentials",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 201, body = NewCredential),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Over max_users", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_credential(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewCredential>)> {
    principal.scope(&id)?;
    let created = create(&state.store, &principal.actor(), &id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A tenant's credentials, revoked ones included.
#[utoipa::path(
    get, path = "/api/tenants/{id}/credentials", tag = "credentials",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses((status = 200, body = CredentialList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_credentials(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<CredentialList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id, &page).await?))
}

/// One credential (without its password).
#[utoipa::path(
    get, path = "/api/tenants/{id}/credentials/{credential_id}", tag = "credentials",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("credential_id" = String, Path, description = "Credential id"),
    ),
    responses((status = 200, body = CredentialView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_credential(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, credential_id)): Path<(String, String)>,
) -> Result<Json<CredentialView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &id, &credential_id).await?))
}

/// Revokes a credential: its next AUTH fails, on every node, within a second.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/credentials/{credential_id}", tag = "credentials",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("credential_id" = String, Path, description = "Credential id"),
    ),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn revoke_credential(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, credential_id)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    revoke(&state.store, &principal.actor(), &id, &credential_id).await?;
    Ok(Success::json())
}

/// Sets the credential's own sending rate (applied within a second, on top of the tenant's).
#[utoipa::path(
    put, path = "/api/tenants/{id}/credentials/{credential_id}", tag = "credentials",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("credential_id" = String, Path, description = "Credential id"),
    ),
    request_body = UpdateCredential,
    responses(
        (status = 200, body = CredentialView),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_credential(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, credential_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateCredential>,
) -> Result<Json<CredentialView>> {
    principal.scope(&id)?;
    let actor = principal.actor();
    Ok(Json(
        update(&state.store, &actor, &id, &credential_id, &request).await?,
    ))
}
