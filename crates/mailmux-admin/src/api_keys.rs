//! `/api/tenants/{id}/api-keys[/{key_id}]`: bearer keys for the REST API bound to one tenant.
//! A key is `mmk_<id>.<secret>`: shown once, stored as a hash of the secret. Keys exist and
//! work only while the tenant has the `api_access` feature.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::credential::{generate_secret, hash_secret, random_id};
use mailmux_core::now_ms;
use mailmux_store::{ApiKey, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{API_KEY_PREFIX, Actor, Principal};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiQuery, OptionalJson};
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;
use crate::views::Success;

/// `POST /api/tenants/{id}/api-keys`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label for people ("deploy bot"); default "api key".
    #[serde(default)]
    pub name: Option<String>,
}

/// A new key; `key` is shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// `Authorization: Bearer <key>`.
    pub key: String,
    pub created_at: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        ApiKeyView {
            id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!("api key {id} not found"))
}

pub async fn create(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    name: Option<&str>,
) -> Result<NewApiKey> {
    let tenant = crate::lookup::tenant(store, tenant_id).await?;
    if !tenant.features.api_access {
        return Err(AdminError::Invalid(format!(
            "tenant {tenant_id} does not have the api_access feature"
        )));
    }
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("api key");
    let secret = generate_secret();
    let key = ApiKey {
        id: random_id("k_", 16),
        tenant_id: tenant.id.clone(),
        name: name.to_string(),
        secret_hash: hash_secret(&secret),
        created_at: now_ms(),
        revoked_at: None,
    };
    let audit = crate::audit_log::entry(
        actor,
        Some(&tenant.id),
        "api_key.create",
        &key.id,
        None,
        Some(serde_json::to_value(ApiKeyView::from(&key)).expect("serialises")),
    );
    store.create_api_key(&key, Some(&audit)).await?;
    Ok(NewApiKey {
        key: format!("{API_KEY_PREFIX}{}.{secret}", key.id),
        id: key.id,
        tenant_id: key.tenant_id,
        name: key.name,
        created_at: key.created_at,
    })
}

pub async fn list(store: &Store, tenant_id: &str, page: &PageQuery) -> Result<ApiKeyList> {
    crate::lookup::tenant(store, tenant_id).await?;
    let limit = page.limit()?;
    let after = pagination::decode_time_id(page.cursor.as_deref())?;
    let rows = store
        .list_api_keys_page(tenant_id, after, limit + 1)
        .await?;
    let (rows, next) = pagination::split_page(rows, limit, |k| {
        pagination::encode_time_id(k.created_at, &k.id)
    });
    Ok(ApiKeyList {
        api_keys: rows.iter().map(ApiKeyView::from).collect(),
        next_cursor: next,
    })
}

pub async fn revoke(store: &Store, actor: &Actor, tenant_id: &str, id: &str) -> Result<()> {
    crate::lookup::tenant(store, tenant_id).await?;
    let before = store
        .get_api_key(id)
        .await?
        .filter(|k| k.tenant_id == tenant_id)
        .ok_or_else(|| not_found(id))?;
    if before.revoked_at.is_some() {
        return Ok(());
    }
    let now = now_ms();
    let mut after = ApiKeyView::from(&before);
    after.revoked_at = Some(now);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "api_key.revoke",
        id,
        Some(serde_json::to_value(ApiKeyView::from(&before)).expect("serialises")),
        Some(serde_json::to_value(after).expect("serialises")),
    );
    // False: revoked meanwhile by another request, which logged it.
    store
        .revoke_api_key(tenant_id, id, now, Some(&audit))
        .await?;
    Ok(())
}

/// Creates an API key for the tenant (needs its `api_access` feature).
#[utoipa::path(
    post, path = "/api/tenants/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "Tenant id")),
    request_body(content = CreateApiKey, description = "Optional; `{}` or no body at all"),
    responses(
        (status = 201, body = NewApiKey),
        (status = 404, body = ErrorBody),
        (status = 422, description = "The tenant lacks api_access", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_api_key(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<CreateApiKey>,
) -> Result<(StatusCode, Json<NewApiKey>)> {
    principal.scope(&id)?;
    let request = body.unwrap_or_default();
    let created = create(
        &state.store,
        &principal.actor(),
        &id,
        request.name.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// A tenant's API keys (never their secrets).
#[utoipa::path(
    get, path = "/api/tenants/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses((status = 200, body = ApiKeyList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_api_keys(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<ApiKeyList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id, &page).await?))
}

/// Revokes an API key at once.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/api-keys/{key_id}", tag = "api-keys",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("key_id" = String, Path, description = "API key id"),
    ),
    responses((status = 200, body = Success), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn revoke_api_key(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    revoke(&state.store, &principal.actor(), &id, &key_id).await?;
    Ok(Success::json())
}
