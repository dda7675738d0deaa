//! `mailmux api-key …`: tenant API keys, created (the key shown once), listed, revoked.

use mailmux_admin::{Actor, api_keys};

use super::{Context, all_pages, with_store};
use crate::output::Shown;

const API_KEY_COLUMNS: &[&str] = &["id", "name", "created_at", "revoked_at"];

pub async fn create(
    context: &Context,
    tenant_id: &str,
    name: Option<&str>,
) -> anyhow::Result<Shown> {
    let created = with_store(context, async |store| {
        api_keys::create(store, &Actor::cli(), tenant_id, name).await
    })
    .await?;
    Shown::object(created)
}

pub async fn list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        all_pages(async |page| {
            let list = api_keys::list(store, tenant_id, page).await?;
            Ok((list.api_keys, list.next_cursor))
        })
        .await
    })
    .await?;
    Shown::list(
        serde_json::json!({ "api_keys": all }),
        "api_keys",
        API_KEY_COLUMNS,
    )
}

pub async fn revoke(context: &Context, tenant_id: &str, id: &str) -> anyhow::Result<Shown> {
    with_store(context, async |store| {
        api_keys::revoke(store, &Actor::cli(), tenant_id, id).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "id": id}))
}
