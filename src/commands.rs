//! The operator's one-shot commands: each opens the store named by the configuration, does one
//! thing and prints JSON on stdout.

use anyhow::Context;
use mailmux_admin::dkim::KeyType;
use mailmux_admin::pagination::PageQuery;
use mailmux_admin::tenants::{CreateTenant, FeatureUpdate, UpdateTenant};
use mailmux_admin::views::StatusName;
use mailmux_admin::{Actor, credentials, domains, lookup, provision, tenants, usage};
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

// Every command below calls the same operation as the matching REST handler, as the actor
// `cli` in the audit log.

pub async fn tenant_create(config: &Config, name: &str, tier: Tier) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let request = CreateTenant {
        name: name.to_string(),
        tier: Some(tier.into()),
        domain: None,
    };
    let created = tenants::create(&store, config, &Actor::cli(), request).await;
    store.close().await;
    print(&created?.tenant)
}

pub async fn tenant_list(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let mut all = Vec::new();
    let mut page = PageQuery {
        limit: Some(mailmux_admin::pagination::MAX_LIMIT),
        cursor: None,
    };
    let result = loop {
        match tenants::list(&store, &page, None).await {
            Ok(list) => {
                all.extend(list.tenants);
                match list.next_cursor {
                    Some(cursor) => page.cursor = Some(cursor),
                    None => break Ok(()),
                }
            }
            Err(error) => break Err(error),
        }
    };
    store.close().await;
    result?;
    print(&serde_json::json!({ "tenants": all }))
}

pub async fn tenant_show(config: &Config, tenant_id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let shown = async {
        let tenant = lookup::tenant(&store, tenant_id).await?;
        let usage = usage::usage(&store, tenant_id).await?;
        let mut value =
            serde_json::to_value(tenants::view(&store, &tenant).await?).expect("tenant serialises");
        value["usage"] = serde_json::to_value(usage.usage).expect("usage serialises");
        Ok::<_, mailmux_admin::AdminError>(value)
    }
    .await;
    store.close().await;
    print(&shown?)
}

/// The options of `tenant update`.
#[derive(clap::Args)]
pub struct TenantUpdateArgs {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_parser = crate::parse_tier)]
    pub tier: Option<Tier>,
    #[arg(long)]
    pub max_users: Option<u64>,
    #[arg(long)]
    pub max_domains: Option<u64>,
    #[arg(long)]
    pub max_storage_mb: Option<u64>,
    #[arg(long)]
    pub max_messages_per_day: Option<u64>,
    #[arg(long)]
    pub max_recipients_per_message: Option<u64>,
    /// Bytes.
    #[arg(long)]
    pub max_message_size: Option<u64>,
    /// Messages per second (burst: as many); 0 = unlimited.
    #[arg(long)]
    pub rate_per_second: Option<u64>,
    /// Messages per minute (burst: as many); 0 = unlimited.
    #[arg(long)]
    pub rate_per_minute: Option<u64>,
    /// Concurrent authenticated SMTP sessions.
    #[arg(long)]
    pub max_connections: Option<u64>,
    #[arg(long)]
    pub enabled: Option<bool>,
    /// active, paused or suspended.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub status_reason: Option<String>,
    /// A feature flag, e.g. `--feature webhooks=true`; repeatable.
    #[arg(long = "feature", value_name = "NAME=BOOL")]
    pub features: Vec<String>,
}

impl TenantUpdateArgs {
    fn into_update(self) -> anyhow::Result<UpdateTenant> {
        let status = match self.status.as_deref() {
            None => None,
            Some("active") => Some(StatusName::Active),
            Some("paused") => Some(StatusName::Paused),
            Some("suspended") => Some(StatusName::Suspended),
            Some(other) => {
                anyhow::bail!("--status: unknown status {other:?} (active, paused, suspended)")
            }
        };
        let features = if self.features.is_empty() {
            None
        } else {
            // The same parser as the REST body: unknown flags are refused by name.
            let mut map = serde_json::Map::new();
            for flag in &self.features {
                let (name, value) = flag
                    .split_once('=')
                    .with_context(|| format!("--feature {flag:?}: expected NAME=true|false"))?;
                let value: bool = value
                    .parse()
                    .with_context(|| format!("--feature {flag:?}: expected true or false"))?;
                map.insert(name.to_string(), serde_json::Value::Bool(value));
            }
            Some(
                serde_json::from_value::<FeatureUpdate>(serde_json::Value::Object(map))
                    .context("--feature")?,
            )
        };
        Ok(UpdateTenant {
            name: self.name,
            tier: self.tier.map(Into::into),
            max_users: self.max_users,
            max_domains: self.max_domains,
            max_storage_mb: self.max_storage_mb,
            max_messages_per_day: self.max_messages_per_day,
            max_recipients_per_message: self.max_recipients_per_message,
            max_message_size: self.max_message_size,
            rate_per_second: self.rate_per_second,
            rate_per_minute: self.rate_per_minute,
            max_connections: self.max_connections,
            enabled: self.enabled,
            status,
            status_reason: self.status_reason,
            features,
            transport: None,
        })
    }
}

pub async fn tenant_update(config: &Config, args: TenantUpdateArgs) -> anyhow::Result<()> {
    let tenant_id = args.tenant.clone();
    let tenant_id = tenant_id.as_str();
    let update = args.into_update()?;
    let store = open_store(config).await?;
    let updated = match tenants::update(&store, &Actor::cli(), tenant_id, &update).await {
        Ok(tenant) => tenants::view(&store, &tenant).await,
        Err(error) => Err(error),
    };
    store.close().await;
    print(&updated?)
}

pub async fn tenant_delete(config: &Config, tenant_id: &str, force: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let deleted = tenants::delete(&store, &Actor::cli(), tenant_id, force).await;
    store.close().await;
    deleted?;
    print(&serde_json::json!({"success": true, "id": tenant_id}))
}

pub async fn credential_create(config: &Config, tenant_id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let credential = credentials::create(&store, &Actor::cli(), tenant_id).await;
    store.close().await;
    print(&credential?)
}

pub async fn credential_revoke(config: &Config, tenant_id: &str, id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let revoked = credentials::revoke(&store, &Actor::cli(), tenant_id, id).await;
    store.close().await;
    print(&revoked?)
}

pub async fn domain_add(
    config: &Config,
    tenant_id: &str,
    domain: &str,
    verified: bool,
    key_type: KeyType,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let added = provision::add_domain(
        &store,
        config,
        &Actor::cli(),
        tenant_id,
        domain,
        key_type,
        verified,
    )
    .await;
    store.close().await;
    print(&added?)
}

pub async fn domain_verify(config: &Config, tenant_id: &str, domain: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let checked = domains::verify(&store, config, &Actor::cli(), tenant_id, domain).await;
    store.close().await;
    print(&checked?)
}

pub async fn domain_rotate_dkim(
    config: &Config,
    tenant_id: &str,
    domain: &str,
    key_type: Option<KeyType>,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let rotated = mailmux_admin::dkim_rotation::rotate(
        &store,
        config,
        &Actor::cli(),
        tenant_id,
        domain,
        key_type,
    )
    .await;
    store.close().await;
    print(&rotated?)
}
