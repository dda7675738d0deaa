//! The operator's one-shot commands: each opens the store named by the configuration, does one
//! thing and prints JSON on stdout.

use anyhow::Context;
use mailmux_admin::provision::{self, DomainView};
use mailmux_core::{Config, Tier};
use mailmux_store::Store;

pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    let store = Store::connect(&url, config.storage.max_db_connections)
        .await
        .with_context(|| format!("cannot open database {}", redact(&url)))?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(store)
}

/// The database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

fn print(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    store.close().await;
    print(&serde_json::json!({"migrated": true}))
}

pub async fn tenant_create(config: &Config, name: &str, tier: Tier) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let tenant = provision::create_tenant(&store, name, tier).await?;
    store.close().await;
    print(&tenant)
}

pub async fn credential_create(config: &Config, tenant_id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let credential = provision::create_credential(&store, tenant_id).await?;
    store.close().await;
    print(&credential)
}

pub async fn domain_add(
    config: &Config,
    tenant_id: &str,
    domain: &str,
    verified: bool,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let domain = provision::add_domain(&store, tenant_id, domain, verified).await?;
    store.close().await;
    print(&DomainView::new(&domain, &config.smtp.hostname))
}
