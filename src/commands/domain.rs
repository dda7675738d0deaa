//! `mailmux domain …`: add (or mark verified), update (inbound on/off), list, show, verify,
//! delete, rotate the DKIM key.

use mailmux_admin::dkim::KeyType;
use mailmux_admin::{Actor, domains, provision};

use super::{Context, all_pages, with_store};
use crate::output::Shown;

const DOMAIN_COLUMNS: &[&str] = &[
    "domain",
    "verified",
    "verified_by",
    "inbound",
    "dkim.selector",
    "dkim_signing",
    "checked_at",
    "flagged_at",
];

pub async fn add(
    context: &Context,
    tenant_id: &str,
    domain: &str,
    verified: bool,
    key_type: KeyType,
    inbound: bool,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    let added = with_store(context, async |store| {
        provision::add_domain(
            store,
            config,
            &Actor::cli(),
            tenant_id,
            domain,
            key_type,
            verified,
            inbound,
        )
        .await
    })
    .await?;
    Shown::object(added)
}

pub async fn update(
    context: &Context,
    tenant_id: &str,
    domain: &str,
    inbound: Option<bool>,
    dmarc_reject: Option<bool>,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    let request = domains::UpdateDomain {
        inbound,
        dmarc_reject,
    };
    let updated = with_store(context, async |store| {
        domains::update(store, config, &Actor::cli(), tenant_id, domain, &request).await
    })
    .await?;
    Shown::object(updated)
}

pub async fn list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let config = &context.config;
    let all = with_store(context, async |store| {
        all_pages(async |page| {
            let list = domains::list(store, config, tenant_id, page).await?;
            Ok((list.domains, list.next_cursor))
        })
        .await
    })
    .await?;
    Shown::list(
        serde_json::json!({ "domains": all }),
        "domains",
        DOMAIN_COLUMNS,
    )
}

pub async fn show(context: &Context, tenant_id: &str, domain: &str) -> anyhow::Result<Shown> {
    let config = &context.config;
    let shown = with_store(context, async |store| {
        domains::show(store, config, tenant_id, domain).await
    })
    .await?;
    Shown::object(shown)
}

pub async fn verify(context: &Context, tenant_id: &str, domain: &str) -> anyhow::Result<Shown> {
    let config = &context.config;
    let checked = with_store(context, async |store| {
        domains::verify(store, config, &Actor::cli(), tenant_id, domain).await
    })
    .await?;
    Shown::object(checked)
}

pub async fn delete(context: &Context, tenant_id: &str, domain: &str) -> anyhow::Result<Shown> {
    let config = &context.config;
    with_store(context, async |store| {
        domains::delete(store, config, &Actor::cli(), tenant_id, domain).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "domain": domain}))
}

pub async fn rotate_dkim(
    context: &Context,
    tenant_id: &str,
    domain: &str,
    key_type: Option<KeyType>,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    let rotated = with_store(context, async |store| {
        mailmux_admin::dkim_rotation::rotate(
            store,
            config,
            &Actor::cli(),
            tenant_id,
            domain,
            key_type,
        )
        .await
    })
    .await?;
    Shown::object(rotated)
}
