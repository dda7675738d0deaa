//! `mailmux tenant …`: create, list, show, update, delete.

use anyhow::Context as _;
use mailmux_admin::tenants::{CreateTenant, FeatureUpdate, UpdateTenant};
use mailmux_admin::views::StatusName;
use mailmux_admin::{Actor, lookup, tenants, usage};
use mailmux_core::Tier;

use super::{Context, all_pages, with_store};
use crate::output::Shown;

const TENANT_COLUMNS: &[&str] = &[
    "id",
    "name",
    "tier",
    "status",
    "enabled",
    "transport",
    "domain",
    "created_at",
];

pub async fn create(context: &Context, name: &str, tier: Tier) -> anyhow::Result<Shown> {
    let request = CreateTenant {
        name: name.to_string(),
        tier: Some(tier.into()),
        domain: None,
    };
    let config = &context.config;
    let created = with_store(context, async |store| {
        tenants::create(store, config, &Actor::cli(), request).await
    })
    .await?;
    Shown::object(created)
}

pub async fn list(context: &Context) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        all_pages(async |page| {
            let list = tenants::list(store, page, None).await?;
            Ok((list.tenants, list.next_cursor))
        })
        .await
    })
    .await?;
    Shown::list(
        serde_json::json!({ "tenants": all }),
        "tenants",
        TENANT_COLUMNS,
    )
}

pub async fn show(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let shown = with_store(context, async |store| {
        let tenant = lookup::tenant(store, tenant_id).await?;
        let usage = usage::usage(store, tenant_id).await?;
        let mut value =
            serde_json::to_value(tenants::view(store, &tenant).await?).expect("tenant serialises");
        value["usage"] = serde_json::to_value(usage.usage).expect("usage serialises");
        Ok(value)
    })
    .await?;
    Shown::object(shown)
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
    /// mx, smarthost or ses; `default` goes back to delivery.transport.
    #[arg(long)]
    pub transport: Option<String>,
    /// Days the tenant's stored inbound mail is kept; 0 = the relay's inbound.retention_days.
    #[arg(long)]
    pub inbound_retention_days: Option<u64>,
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
        // `default` is the CLI's spelling of the API's `null`; anything else is checked by
        // the same rule as the REST body.
        let transport = self.transport.map(|t| (t != "default").then_some(t));
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
            transport,
            inbound_retention_days: self.inbound_retention_days,
            // The API's round-trip fields: a command says what to change, nothing more.
            ..UpdateTenant::default()
        })
    }
}

pub async fn update(context: &Context, args: TenantUpdateArgs) -> anyhow::Result<Shown> {
    let tenant_id = args.tenant.clone();
    let update = args.into_update()?;
    let updated = with_store(context, async |store| {
        let tenant = tenants::update(store, &Actor::cli(), &tenant_id, &update).await?;
        tenants::view(store, &tenant).await
    })
    .await?;
    Shown::object(updated)
}

pub async fn delete(context: &Context, tenant_id: &str, force: bool) -> anyhow::Result<Shown> {
    with_store(context, async |store| {
        tenants::delete(store, &Actor::cli(), tenant_id, force).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "id": tenant_id}))
}
