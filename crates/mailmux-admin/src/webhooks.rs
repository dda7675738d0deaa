//! `/api/tenants/{id}/webhooks[/{webhook_id}[/rotate|/deliveries[/{delivery_id}/replay]]]`:
//! the tenant's HTTP endpoints (feature `webhooks`). An `inbound` endpoint receives mail of
//! `webhook` receipt rules; an `events` endpoint is for delivery events (`event_types`).
//!
//! Security decisions here: the URL is checked against `webhooks.allowed_networks` when it is
//! set (SSRF; the worker checks again at every connect); the signing secret (`whsec_…`) is
//! shown once, at creation and at rotation, and stored sealed with the master key; a rotation
//! keeps the old secret signing beside the new one for `overlap_secs` (default 24 h), so the
//! tenant can switch its receiver over without rejecting a single request. An endpoint a
//! receipt rule still uses cannot be deleted (409 naming the rules).
//!
//! Over 600 lines on purpose: one resource with eight routes (endpoints, rotation, deliveries,
//! replay), each a documented handler beside the operation the CLI shares; about half is
//! request/response types and utoipa annotations. Split by route, the checks the routes share
//! (URL, event types, feature, sealing) would have to move to a file of their own that only
//! this resource uses.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mailmux_core::address_policy::AddressPolicy;
use mailmux_core::{Config, Feature, now_ms};
use mailmux_store::{MasterKey, Store, Webhook, WebhookAttempt, WebhookDelivery};
use mailmux_webhooks::{KIND_EVENTS, KIND_INBOUND, Secret, seal_secret};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Actor, Principal};
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::{ApiJson, ApiQuery, OptionalJson};
use crate::lookup;
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;
use crate::views::Success;

/// The overlap a rotation gives the old secret when the request names none: 24 h.
const DEFAULT_OVERLAP_SECS: u64 = 86_400;
/// The longest overlap: a week.
const MAX_OVERLAP_SECS: u64 = 7 * 86_400;

/// `POST` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://…`); its host must resolve to addresses mailmux may reach.
    pub url: String,
    /// `inbound` (mail of `webhook` receipt rules) or `events` (delivery events).
    pub kind: String,
    /// `events` endpoints: the event types sent (empty: all).
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
}

fn enabled_default() -> bool {
    true
}

/// `PUT` body: any of the fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// A disabled endpoint keeps its deliveries pending; they are sent once it is enabled.
    pub enabled: Option<bool>,
}

/// `POST …/rotate` body (optional).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateWebhook {
    /// How long the old secret keeps signing beside the new one (default 86400, at most a
    /// week; 0 ends it at once).
    pub overlap_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub kind: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// While a rotation's overlap lasts: until when the previous secret still signs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookView {
    fn new(webhook: &Webhook, now: i64) -> WebhookView {
        WebhookView {
            id: webhook.id.clone(),
            tenant_id: webhook.tenant_id.clone(),
            url: webhook.url.clone(),
            kind: webhook.kind.clone(),
            event_types: webhook.event_types.clone(),
            enabled: webhook.enabled,
            previous_secret_expires_at: webhook.previous_secret_expires_at.filter(|at| *at > now),
            created_at: webhook.created_at,
            updated_at: webhook.updated_at,
        }
    }
}

/// An endpoint with its secret: the answer to creation and rotation, the only time the secret
/// is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_…`: give it to the receiver's Standard Webhooks library. Shown this once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: i64,
    /// The HTTP status, when one came back.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl From<&WebhookAttempt> for AttemptView {
    fn from(a: &WebhookAttempt) -> AttemptView {
        AttemptView {
            attempt: a.attempt,
            at: a.at,
            status_code: a.status_code,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` header of every attempt.
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub message_id: Option<String>,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// Pending: when the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Every attempt, first first.
    pub history: Vec<AttemptView>,
}

impl DeliveryView {
    fn new(delivery: &WebhookDelivery, history: &[WebhookAttempt]) -> DeliveryView {
        DeliveryView {
            id: delivery.id.clone(),
            webhook_id: delivery.webhook_id.clone(),
            event_type: delivery.event_type.clone(),
            message_id: delivery.message_id.clone(),
            status: delivery.status.clone(),
            attempts: delivery.attempts,
            next_attempt_at: (delivery.status == "pending").then_some(delivery.next_attempt_at),
            last_error: delivery.last_error.clone(),
            created_at: delivery.created_at,
            finished_at: delivery.finished_at,
            history: history.iter().map(AttemptView::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---- checks ---------------------------------------------------------------------------------

async fn checked_url(config: &Config, url: &str) -> Result<String> {
    let policy = AddressPolicy::new(&config.webhooks.allowed_networks);
    mailmux_webhooks::destination::check_url(url.trim(), &policy)
        .await
        .map_err(AdminError::Invalid)?;
    Ok(url.trim().to_string())
}

/// Event type names: lowercase words with dots or underscores. An `inbound` endpoint takes
/// inbound mail only, so it names none.
fn checked_event_types(kind: &str, types: &[String]) -> Result<Vec<String>> {
    if kind == KIND_INBOUND {
        return match types {
            [] => Ok(Vec::new()),
            [only] if only == mailmux_webhooks::EVENT_INBOUND_MESSAGE => Ok(Vec::new()),
            _ => Err(AdminError::Invalid(
                "event_types: an inbound endpoint receives inbound mail only; leave it empty"
                    .into(),
            )),
        };
    }
    let valid = |t: &String| {
        (1..=64).contains(&t.len())
            && t.starts_with(|c: char| c.is_ascii_lowercase())
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
    };
    if let Some(bad) = types.iter().find(|t| !valid(t)) {
        return Err(AdminError::Invalid(format!(
            "event_types: {bad:?} is not an event type (lowercase, e.g. \"bounced\")"
        )));
    }
    let mut types = types.to_vec();
    types.sort();
    types.dedup();
    Ok(types)
}

fn master_key(config: &Config) -> Result<MasterKey> {
    Ok(MasterKey::load_or_create(
        &config.storage.data_dir.join("master.key"),
    )?)
}

fn new_secret() -> Result<Secret> {
    Secret::generate().map_err(|e| AdminError::Internal(e.to_string()))
}

fn sealed(master: &MasterKey, id: &str, secret: &Secret) -> Result<Vec<u8>> {
    seal_secret(master, id, secret).map_err(|e| {
        tracing::error!(error = %e, "sealing a webhook secret");
        AdminError::Internal("the key store is unavailable".into())
    })
}

/// The tenant, with the feature checked (403 without it).
async fn tenant_with_feature(store: &Store, tenant_id: &str) -> Result<()> {
    let tenant = lookup::tenant(store, tenant_id).await?;
    crate::features::require(&tenant, Feature::Webhooks)
}

async fn find(store: &Store, tenant_id: &str, id: &str) -> Result<Webhook> {
    tenant_with_feature(store, tenant_id).await?;
    store
        .get_webhook(tenant_id, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("webhook {id} not found")))
}

fn audit_value<T: Serialize>(view: &T) -> Option<serde_json::Value> {
    Some(serde_json::to_value(view).unwrap_or_default())
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn create(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    request: &CreateWebhook,
) -> Result<WebhookWithSecret> {
    tenant_with_feature(store, tenant_id).await?;
    if request.kind != KIND_INBOUND && request.kind != KIND_EVENTS {
        return Err(AdminError::Invalid(format!(
            "kind {:?}: expected inbound or events",
            request.kind
        )));
    }
    let event_types = checked_event_types(&request.kind, &request.event_types)?;
    let url = checked_url(config, &request.url).await?;
    let id = mailmux_webhooks::new_webhook_id();
    let secret = new_secret()?;
    let now = now_ms();
    let webhook = Webhook {
        secret_sealed: sealed(&master_key(config)?, &id, &secret)?,
        id,
        tenant_id: tenant_id.to_string(),
        url,
        kind: request.kind.clone(),
        event_types,
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        enabled: request.enabled,
        created_at: now,
        updated_at: now,
    };
    let view = WebhookView::new(&webhook, now);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "webhook.create",
        &webhook.id,
        None,
        audit_value(&view),
    );
    store.create_webhook(&webhook, Some(&audit)).await?;
    Ok(WebhookWithSecret {
        webhook: view,
        secret: secret.to_text(),
    })
}

pub async fn list(store: &Store, tenant_id: &str) -> Result<WebhookList> {
    tenant_with_feature(store, tenant_id).await?;
    let now = now_ms();
    Ok(WebhookList {
        webhooks: store
            .list_webhooks(tenant_id)
            .await?
            .iter()
            .map(|w| WebhookView::new(w, now))
            .collect(),
    })
}

pub async fn show(store: &Store, tenant_id: &str, id: &str) -> Result<WebhookView> {
    Ok(WebhookView::new(
        &find(store, tenant_id, id).await?,
        now_ms(),
    ))
}

pub async fn update(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
    request: &UpdateWebhook,
) -> Result<WebhookView> {
    let before = find(store, tenant_id, id).await?;
    let mut after = before.clone();
    if let Some(url) = &request.url {
        after.url = checked_url(config, url).await?;
    }
    if let Some(types) = &request.event_types {
        after.event_types = checked_event_types(&before.kind, types)?;
    }
    if let Some(enabled) = request.enabled {
        after.enabled = enabled;
    }
    let now = now_ms();
    after.updated_at = now.max(before.updated_at + 1);
    let view = WebhookView::new(&after, now);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "webhook.update",
        id,
        audit_value(&WebhookView::new(&before, now)),
        audit_value(&view),
    );
    store.update_webhook(&after, Some(&audit)).await?;
    Ok(view)
}

pub async fn delete(store: &Store, actor: &Actor, tenant_id: &str, id: &str) -> Result<()> {
    let before = find(store, tenant_id, id).await?;
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "webhook.delete",
        id,
        audit_value(&WebhookView::new(&before, now_ms())),
        None,
    );
    if !store.delete_webhook(tenant_id, id, Some(&audit)).await? {
        return Err(AdminError::NotFound(format!("webhook {id} not found")));
    }
    Ok(())
}

/// A new secret, shown once; the current one keeps signing beside it for the overlap.
pub async fn rotate(
    store: &Store,
    config: &Config,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
    request: &RotateWebhook,
) -> Result<WebhookWithSecret> {
    let before = find(store, tenant_id, id).await?;
    let overlap = request.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(AdminError::Invalid(format!(
            "overlap_secs: at most {MAX_OVERLAP_SECS} (a week)"
        )));
    }
    let secret = new_secret()?;
    let now = now_ms();
    let after = Webhook {
        secret_sealed: sealed(&master_key(config)?, id, &secret)?,
        previous_secret_sealed: (overlap > 0).then(|| before.secret_sealed.clone()),
        previous_secret_expires_at: (overlap > 0).then(|| now + overlap as i64 * 1000),
        updated_at: now.max(before.updated_at + 1),
        ..before.clone()
    };
    let view = WebhookView::new(&after, now);
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "webhook.rotate",
        id,
        audit_value(&WebhookView::new(&before, now)),
        audit_value(&view),
    );
    store.update_webhook(&after, Some(&audit)).await?;
    Ok(WebhookWithSecret {
        webhook: view,
        secret: secret.to_text(),
    })
}

pub async fn deliveries(
    store: &Store,
    tenant_id: &str,
    id: &str,
    page: &PageQuery,
) -> Result<DeliveryList> {
    find(store, tenant_id, id).await?;
    let limit = page.limit()?;
    let before = pagination::decode_time_id(page.cursor.as_deref())?;
    let found = store
        .list_webhook_deliveries(
            tenant_id,
            id,
            before.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit + 1,
        )
        .await?;
    let (found, next) = pagination::split_page(found, limit, |d| {
        pagination::encode_time_id(d.created_at, &d.id)
    });
    let mut deliveries = Vec::with_capacity(found.len());
    for delivery in &found {
        let history = store.webhook_attempts(&delivery.id).await?;
        deliveries.push(DeliveryView::new(delivery, &history));
    }
    Ok(DeliveryList {
        deliveries,
        next_cursor: next,
    })
}

/// Sends a delivery once more (whatever its status, a dead one included), with a new retry
/// window; same id and payload, so a receiver that already has it can tell.
pub async fn replay(
    store: &Store,
    actor: &Actor,
    tenant_id: &str,
    id: &str,
    delivery_id: &str,
) -> Result<DeliveryView> {
    find(store, tenant_id, id).await?;
    let not_found = || AdminError::NotFound(format!("delivery {delivery_id} not found"));
    let before = store
        .get_webhook_delivery(tenant_id, id, delivery_id)
        .await?
        .ok_or_else(not_found)?;
    let audit = crate::audit_log::entry(
        actor,
        Some(tenant_id),
        "webhook.replay",
        delivery_id,
        Some(serde_json::json!({"status": before.status, "attempts": before.attempts})),
        Some(serde_json::json!({"status": "pending"})),
    );
    if !store
        .replay_webhook_delivery(tenant_id, id, delivery_id, now_ms(), Some(&audit))
        .await?
    {
        return Err(not_found());
    }
    let after = store
        .get_webhook_delivery(tenant_id, id, delivery_id)
        .await?
        .ok_or_else(not_found)?;
    let history = store.webhook_attempts(delivery_id).await?;
    Ok(DeliveryView::new(&after, &history))
}

// ---- handlers -------------------------------------------------------------------------------

/// Adds an endpoint; the answer carries its signing secret, shown this once.
#[utoipa::path(
    post, path = "/api/tenants/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = CreateWebhook,
    responses(
        (status = 201, body = WebhookWithSecret),
        (status = 403, description = "The tenant lacks the webhooks feature", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Bad kind or event types; URL not http(s), with user-info, or pointing at a refused address", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookWithSecret>)> {
    principal.scope(&id)?;
    let created = create(
        &state.store,
        &state.config,
        &principal.actor(),
        &id,
        &request,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The tenant's endpoints (without secrets).
#[utoipa::path(
    get, path = "/api/tenants/{id}/webhooks", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id).await?))
}

/// One endpoint.
#[utoipa::path(
    get, path = "/api/tenants/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_webhook(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id)): Path<(String, String)>,
) -> Result<Json<WebhookView>> {
    principal.scope(&id)?;
    Ok(Json(show(&state.store, &id, &webhook_id).await?))
}

/// Changes an endpoint's URL, event types or `enabled`.
#[utoipa::path(
    put, path = "/api/tenants/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path)),
    request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn update_webhook(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id)): Path<(String, String)>,
    ApiJson(request): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>> {
    principal.scope(&id)?;
    let actor = principal.actor();
    Ok(Json(
        update(
            &state.store,
            &state.config,
            &actor,
            &id,
            &webhook_id,
            &request,
        )
        .await?,
    ))
}

/// Deletes an endpoint and its deliveries; 409 while a receipt rule uses it.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path)),
    responses(
        (status = 200, body = Success),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A receipt rule still uses the endpoint", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id)): Path<(String, String)>,
) -> Result<Json<Success>> {
    principal.scope(&id)?;
    delete(&state.store, &principal.actor(), &id, &webhook_id).await?;
    Ok(Success::json())
}

/// A new signing secret (shown once); the old one keeps signing for `overlap_secs`.
#[utoipa::path(
    post, path = "/api/tenants/{id}/webhooks/{webhook_id}/rotate", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path)),
    request_body(content = Option<RotateWebhook>),
    responses((status = 200, body = WebhookWithSecret), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn rotate_webhook(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id)): Path<(String, String)>,
    OptionalJson(request): OptionalJson<RotateWebhook>,
) -> Result<Json<WebhookWithSecret>> {
    principal.scope(&id)?;
    let request = request.unwrap_or_default();
    let actor = principal.actor();
    Ok(Json(
        rotate(
            &state.store,
            &state.config,
            &actor,
            &id,
            &webhook_id,
            &request,
        )
        .await?,
    ))
}

/// The endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(
    get, path = "/api/tenants/{id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path), PageQuery),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_deliveries(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id)): Path<(String, String)>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<DeliveryList>> {
    principal.scope(&id)?;
    Ok(Json(
        deliveries(&state.store, &id, &webhook_id, &page).await?,
    ))
}

/// Delivers once more (a dead delivery included).
#[utoipa::path(
    post, path = "/api/tenants/{id}/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", tag = "webhooks",
    params(("id" = String, Path, description = "Tenant id"), ("webhook_id" = String, Path), ("delivery_id" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn replay_delivery(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Result<Json<DeliveryView>> {
    principal.scope(&id)?;
    let actor = principal.actor();
    Ok(Json(
        replay(&state.store, &actor, &id, &webhook_id, &delivery_id).await?,
    ))
}
