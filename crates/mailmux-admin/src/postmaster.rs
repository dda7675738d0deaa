//! `/api/postmaster[/{message_id}[/raw]]` (operator only): the operator's postmaster mailbox,
//! mail to the bare `<postmaster>` while `inbound.postmaster` names no tenant address. Shown like
//! a tenant's stored inbound mail (`mailmux_inbound::parsed`): a listing of envelopes, one
//! message parsed, or its exact bytes.

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
use crate::pagination::{self, PageQuery};
use crate::state::AdminState;

#[derive(Debug, Serialize, ToSchema)]
pub struct PostmasterList {
    /// Newest first: `{id, mail_from, size, received_at}`.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

// ---- operations (shared with the CLI) ------------------------------------------------------

pub async fn list(store: &Store, page: &PageQuery) -> Result<PostmasterList> {
    let limit = page.limit()?;
    let before = page.cursor.as_deref().map(pagination::decode).transpose()?;
    let messages = store.list_postmaster(before.as_deref(), limit + 1).await?;
    let (messages, next) = pagination::split_page(messages, limit, |m| pagination::encode(&m.id));
    Ok(PostmasterList {
        messages: messages
            .iter()
            .map(mailmux_inbound::parsed::summary)
            .collect(),
        next_cursor: next,
    })
}

/// One message, parsed (headers, text, HTML, attachment metadata).
pub async fn show(store: &Store, id: &str) -> Result<serde_json::Value> {
    Ok(mailmux_inbound::parsed::parsed(&fetch(store, id).await?))
}

pub async fn fetch(store: &Store, id: &str) -> Result<InboundMessage> {
    store
        .get_postmaster(id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("postmaster message {id} not found")))
}

// ---- handlers -------------------------------------------------------------------------------

/// The operator's postmaster mailbox, newest first.
#[utoipa::path(
    get, path = "/api/postmaster", tag = "inbound",
    params(PageQuery),
    responses(
        (status = 200, body = PostmasterList),
        (status = 403, description = "Not the operator", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_postmaster(
    State(state): State<AdminState>,
    principal: Principal,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<PostmasterList>> {
    principal.require_operator("the postmaster mailbox")?;
    Ok(Json(list(&state.store, &page).await?))
}

/// One message of the postmaster mailbox, parsed.
#[utoipa::path(
    get, path = "/api/postmaster/{message_id}", tag = "inbound",
    params(("message_id" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 403, description = "Not the operator", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show_postmaster(
    State(state): State<AdminState>,
    principal: Principal,
    Path(message_id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    principal.require_operator("the postmaster mailbox")?;
    Ok(Json(show(&state.store, &message_id).await?))
}

/// One message of the postmaster mailbox, its exact bytes (`message/rfc822`).
#[utoipa::path(
    get, path = "/api/postmaster/{message_id}/raw", tag = "inbound",
    params(("message_id" = String, Path)),
    responses(
        (status = 200, content_type = "message/rfc822", body = Vec<u8>),
        (status = 403, description = "Not the operator", body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn raw_postmaster(
    State(state): State<AdminState>,
    principal: Principal,
    Path(message_id): Path<String>,
) -> Result<impl IntoResponse> {
    principal.require_operator("the postmaster mailbox")?;
    let message = fetch(&state.store, &message_id).await?;
    Ok(([(header::CONTENT_TYPE, "message/rfc822")], message.raw))
}
