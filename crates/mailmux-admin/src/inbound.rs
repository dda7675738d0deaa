//! `/api/tenants/{id}/inbound[/{message_id}[/raw]]`: mail the MX kept for the tenant (`store`
//! rules, and postmaster mail no rule covers). The listing shows the envelope; one message is
//! shown parsed (headers, text, HTML, attachment metadata: `mailmux_inbound::parsed`); `raw`
//! returns the exact bytes as accepted, our trace headers in front.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use mailmux_store::{InboundMessage, Store};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;
use crate::error::{AdminError, ErrorBody, Result};
use crate::extract::ApiQuery;
use crate::lookup;
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundList {
    /// Newest first: `{id, mail_from, recipients: [{address, rule_id, tag}], size,
    /// received_at}`.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn list(store: &Store, tenant_id: &str, page: &PageQuery) -> Result<InboundList> {
    lookup::tenant(store, tenant_id).await?;
    let limit = page.limit()?;
    let before = page.cursor.as_deref().map(pagination::decode).transpose()?;
    let messages = store
        .list_inbound(tenant_id, before.as_deref(), limit + 1)
        .await?;
    let (messages, next) = pagination::split_page(messages, limit, |m| pagination::encode(&m.id));
    Ok(InboundList {
        messages: messages
            .iter()
            .map(mailmux_inbound::parsed::summary)
            .collect(),
        next_cursor: next,
    })
}

pub async fn fetch(store: &Store, tenant_id: &str, id: &str) -> Result<InboundMessage> {
    lookup::tenant(store, tenant_id).await?;
    store
        .get_inbound(tenant_id, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("inbound message {id} not found")))
}

// ---- handlers -------------------------------------------------------------------------------

/// The tenant's stored inbound mail, newest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/inbound", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), PageQuery),
    responses((status = 200, body = InboundList), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_inbound(
    State(state): State<AdminState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<InboundList>> {
    principal.scope(&id)?;
    Ok(Json(list(&state.store, &id, &page).await?))
}

/// One stored message, parsed: envelope, headers, text, HTML, attachment metadata.
#[utoipa::path(
    get, path = "/api/tenants/{id}/inbound/{message_id}", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), ("message_id" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn show_inbound(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>> {
    principal.scope(&id)?;
    let message = fetch(&state.store, &id, &message_id).await?;
    Ok(Json(mailmux_inbound::parsed::parsed(&message)))
}

/// One stored message's exact bytes (`message/rfc822`).
#[utoipa::path(
    get, path = "/api/tenants/{id}/inbound/{message_id}/raw", tag = "inbound",
    params(("id" = String, Path, description = "Tenant id"), ("message_id" = String, Path)),
    responses(
        (status = 200, content_type = "message/rfc822", body = Vec<u8>),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn raw_inbound(
    State(state): State<AdminState>,
    principal: Principal,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    principal.scope(&id)?;
    let message = fetch(&state.store, &id, &message_id).await?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], message.raw))
}
