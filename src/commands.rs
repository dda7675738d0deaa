//! The operator's one-shot commands: each opens the store named by the configuration, does one
//! thing and returns what to print (JSON, or a table with `--output table`).
//!
//! Every command calls the same admin-crate operation as the matching REST handler, as the
//! actor `cli` in the audit log: there is no second implementation of any rule here.
//!
//! The configuration is found as `serve` finds it (`--config`, `$MAILMUX_CONFIG`,
//! `./mailmux.toml`, the embedded default), and a command other than `migrate` (and `serve`)
//! never creates a database: run from the wrong directory, it would otherwise make an empty
//! one there and report an empty relay, which looks like lost data.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use mailmux_admin::dkim::KeyType;
use mailmux_admin::messages::MessageQuery;
use mailmux_admin::pagination::{MAX_LIMIT, PageQuery};
use mailmux_admin::tenants::{CreateTenant, FeatureUpdate, UpdateTenant};
use mailmux_admin::views::StatusName;
use mailmux_admin::{
    Actor, api_keys, audit, credentials, domains, lookup, messages, provision, tenants, usage,
};
use mailmux_core::{Config, Tier};
use mailmux_store::Store;

use crate::output::Shown;

/// The configuration in force, and where it came from (for messages).
pub struct Context {
    pub config: Config,
    pub source: ConfigSource,
}

/// Where the configuration came from, in the order it is looked for.
pub enum ConfigSource {
    /// `--config PATH`.
    Flag(PathBuf),
    /// `$MAILMUX_CONFIG`.
    Env(PathBuf),
    /// `./mailmux.toml` in the working directory.
    WorkingDir(PathBuf),
    /// None of them: the embedded defaults (and `MAILMUX_<SECTION>__<KEY>` variables).
    Embedded,
}

impl ConfigSource {
    /// `--config`, then `$MAILMUX_CONFIG`, then `./mailmux.toml`, then the embedded default.
    pub fn find(flag: Option<PathBuf>) -> ConfigSource {
        if let Some(path) = flag {
            return ConfigSource::Flag(path);
        }
        if let Some(path) = std::env::var_os("MAILMUX_CONFIG").filter(|p| !p.is_empty()) {
            return ConfigSource::Env(PathBuf::from(path));
        }
        let local = PathBuf::from("mailmux.toml");
        if local.is_file() {
            return ConfigSource::WorkingDir(local);
        }
        ConfigSource::Embedded
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Flag(path) | ConfigSource::Env(path) | ConfigSource::WorkingDir(path) => {
                Some(path)
            }
            ConfigSource::Embedded => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            ConfigSource::Flag(path) => format!("--config {}", path.display()),
            ConfigSource::Env(path) => format!("MAILMUX_CONFIG={}", path.display()),
            ConfigSource::WorkingDir(path) => format!("{} in {}", path.display(), cwd_display()),
            ConfigSource::Embedded => format!(
                "the embedded default (no --config, no MAILMUX_CONFIG, no mailmux.toml in {})",
                cwd_display()
            ),
        }
    }
}

fn cwd_display() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "the current directory".into())
}

/// Opens the database for a command that works on existing data: refused, naming where it
/// looked, when there is no mailmux database there yet.
pub async fn open_store(context: &Context) -> anyhow::Result<Store> {
    let url = context.config.database_url();
    let refuse = |what: String| {
        anyhow::anyhow!(
            "{what} (storage.database_url from {}); this command does not create a database.\n\
             Point it at the configuration `mailmux serve` uses: --config PATH or \
             MAILMUX_CONFIG=PATH, or run it in serve's working directory (relative paths such \
             as the default ./data are resolved there). `mailmux migrate` creates a new \
             database.",
            context.source.describe()
        )
    };
    if let Some(path) = sqlite_path(&url)
        && !path.exists()
    {
        return Err(refuse(format!("no mailmux database at {}", path.display())));
    }
    let store = connect(&context.config, &url).await?;
    match store.is_migrated().await {
        Ok(true) => {}
        Ok(false) => {
            store.close().await;
            let at = sqlite_path(&url)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| redact(&url));
            return Err(refuse(format!("the database {at} holds no mailmux schema")));
        }
        Err(error) => {
            store.close().await;
            return Err(error).context(format!("cannot read database {}", redact(&url)));
        }
    }
    // An older schema is brought up to date, as serve would at its next start.
    migrate_store(store).await
}

/// Opens the database, creating it (and its schema) if it does not exist: `serve` and
/// `migrate` only.
pub async fn open_or_create_store(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    let store = connect(config, &url).await?;
    migrate_store(store).await
}

async fn connect(config: &Config, url: &str) -> anyhow::Result<Store> {
    Store::connect(url, config.storage.max_db_connections)
        .await
        .with_context(|| format!("cannot open database {}", redact(url)))
}

async fn migrate_store(store: Store) -> anyhow::Result<Store> {
    if let Err(error) = store.migrate().await {
        store.close().await;
        return Err(error).context("cannot apply database migrations");
    }
    Ok(store)
}

/// The file of a `sqlite:` URL, made absolute against the working directory (what SQLite
/// opens); `None` for other databases and in-memory SQLite.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let path = Path::new(path);
    let absolute = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    // `./data/…` shown as `<cwd>/data/…`, not `<cwd>/./data/…`.
    Some(
        absolute
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect(),
    )
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

/// Runs `operation` on the store named by `context`, closing it afterwards either way.
async fn with_store<T, F>(context: &Context, operation: F) -> anyhow::Result<T>
where
    F: AsyncFnOnce(&Store) -> Result<T, mailmux_admin::AdminError>,
{
    let store = open_store(context).await?;
    let result = operation(&store).await;
    store.close().await;
    Ok(result?)
}

pub async fn migrate(context: &Context) -> anyhow::Result<Shown> {
    let store = open_or_create_store(&context.config).await?;
    store.close().await;
    Shown::object(serde_json::json!({"migrated": true}))
}

// ---- tenants --------------------------------------------------------------------------------

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

pub async fn tenant_create(context: &Context, name: &str, tier: Tier) -> anyhow::Result<Shown> {
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

pub async fn tenant_list(context: &Context) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        let mut all = Vec::new();
        let mut page = PageQuery {
            limit: Some(MAX_LIMIT),
            cursor: None,
        };
        loop {
            let list = tenants::list(store, &page, None).await?;
            all.extend(list.tenants);
            match list.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break Ok(all),
            }
        }
    })
    .await?;
    Shown::list(
        serde_json::json!({ "tenants": all }),
        "tenants",
        TENANT_COLUMNS,
    )
}

pub async fn tenant_show(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
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
        })
    }
}

pub async fn tenant_update(context: &Context, args: TenantUpdateArgs) -> anyhow::Result<Shown> {
    let tenant_id = args.tenant.clone();
    let update = args.into_update()?;
    let updated = with_store(context, async |store| {
        let tenant = tenants::update(store, &Actor::cli(), &tenant_id, &update).await?;
        tenants::view(store, &tenant).await
    })
    .await?;
    Shown::object(updated)
}

pub async fn tenant_delete(
    context: &Context,
    tenant_id: &str,
    force: bool,
) -> anyhow::Result<Shown> {
    with_store(context, async |store| {
        tenants::delete(store, &Actor::cli(), tenant_id, force).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "id": tenant_id}))
}

// ---- credentials ----------------------------------------------------------------------------

const CREDENTIAL_COLUMNS: &[&str] = &[
    "id",
    "username",
    "created_at",
    "revoked_at",
    "rate_per_second",
    "rate_per_minute",
];

pub async fn credential_create(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let credential = with_store(context, async |store| {
        credentials::create(store, &Actor::cli(), tenant_id).await
    })
    .await?;
    Shown::object(credential)
}

pub async fn credential_list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        let mut all = Vec::new();
        let mut page = PageQuery {
            limit: Some(MAX_LIMIT),
            cursor: None,
        };
        loop {
            let list = credentials::list(store, tenant_id, &page).await?;
            all.extend(list.credentials);
            match list.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break Ok(all),
            }
        }
    })
    .await?;
    Shown::list(
        serde_json::json!({ "credentials": all }),
        "credentials",
        CREDENTIAL_COLUMNS,
    )
}

/// Which credential `credential revoke` names.
pub enum CredentialRef {
    Id(String),
    Username(String),
}

pub async fn credential_revoke(
    context: &Context,
    tenant_id: Option<&str>,
    which: CredentialRef,
) -> anyhow::Result<Shown> {
    let revoked = with_store(context, async |store| {
        let (tenant_id, id) = match which {
            CredentialRef::Id(id) => {
                let tenant = tenant_id.ok_or_else(|| {
                    mailmux_admin::AdminError::Invalid(
                        "--tenant is needed with --id (or name the credential by --username)"
                            .into(),
                    )
                })?;
                (tenant.to_string(), id)
            }
            CredentialRef::Username(username) => {
                let not_found = || {
                    mailmux_admin::AdminError::NotFound(format!("credential {username} not found"))
                };
                let found = store
                    .find_credential(&username)
                    .await?
                    .ok_or_else(not_found)?;
                if tenant_id.is_some_and(|t| t != found.tenant_id) {
                    return Err(not_found());
                }
                (found.tenant_id, found.id)
            }
        };
        credentials::revoke(store, &Actor::cli(), &tenant_id, &id).await
    })
    .await?;
    Shown::object(revoked)
}

// ---- domains --------------------------------------------------------------------------------

const DOMAIN_COLUMNS: &[&str] = &[
    "domain",
    "verified",
    "verified_by",
    "dkim.selector",
    "dkim_signing",
    "checked_at",
    "flagged_at",
];

pub async fn domain_add(
    context: &Context,
    tenant_id: &str,
    domain: &str,
    verified: bool,
    key_type: KeyType,
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
        )
        .await
    })
    .await?;
    Shown::object(added)
}

pub async fn domain_list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let config = &context.config;
    let all = with_store(context, async |store| {
        let mut all = Vec::new();
        let mut page = PageQuery {
            limit: Some(MAX_LIMIT),
            cursor: None,
        };
        loop {
            let list = domains::list(store, config, tenant_id, &page).await?;
            all.extend(list.domains);
            match list.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break Ok(all),
            }
        }
    })
    .await?;
    Shown::list(
        serde_json::json!({ "domains": all }),
        "domains",
        DOMAIN_COLUMNS,
    )
}

pub async fn domain_show(
    context: &Context,
    tenant_id: &str,
    domain: &str,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    let shown = with_store(context, async |store| {
        domains::show(store, config, tenant_id, domain).await
    })
    .await?;
    Shown::object(shown)
}

pub async fn domain_verify(
    context: &Context,
    tenant_id: &str,
    domain: &str,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    let checked = with_store(context, async |store| {
        domains::verify(store, config, &Actor::cli(), tenant_id, domain).await
    })
    .await?;
    Shown::object(checked)
}

pub async fn domain_delete(
    context: &Context,
    tenant_id: &str,
    domain: &str,
) -> anyhow::Result<Shown> {
    let config = &context.config;
    with_store(context, async |store| {
        domains::delete(store, config, &Actor::cli(), tenant_id, domain).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "domain": domain}))
}

pub async fn domain_rotate_dkim(
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

// ---- API keys -------------------------------------------------------------------------------

const API_KEY_COLUMNS: &[&str] = &["id", "name", "created_at", "revoked_at"];

pub async fn api_key_create(
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

pub async fn api_key_list(context: &Context, tenant_id: &str) -> anyhow::Result<Shown> {
    let all = with_store(context, async |store| {
        let mut all = Vec::new();
        let mut page = PageQuery {
            limit: Some(MAX_LIMIT),
            cursor: None,
        };
        loop {
            let list = api_keys::list(store, tenant_id, &page).await?;
            all.extend(list.api_keys);
            match list.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break Ok(all),
            }
        }
    })
    .await?;
    Shown::list(
        serde_json::json!({ "api_keys": all }),
        "api_keys",
        API_KEY_COLUMNS,
    )
}

pub async fn api_key_revoke(context: &Context, tenant_id: &str, id: &str) -> anyhow::Result<Shown> {
    with_store(context, async |store| {
        api_keys::revoke(store, &Actor::cli(), tenant_id, id).await
    })
    .await?;
    Shown::object(serde_json::json!({"success": true, "id": id}))
}

// ---- messages and the audit log -------------------------------------------------------------

const MESSAGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "mail_from",
    "size",
    "attempts",
    "created_at",
    "next_attempt_at",
];

const AUDIT_COLUMNS: &[&str] = &["id", "at", "actor", "tenant_id", "action", "target"];

/// The options of `message list`.
#[derive(clap::Args)]
pub struct MessageListArgs {
    #[arg(long)]
    pub tenant: String,
    /// queued, deferred, delivered, bounced or partial.
    #[arg(long)]
    pub status: Option<String>,
    /// Only messages accepted since then: Unix milliseconds, or a time ago such as 30m, 2h,
    /// 7d (s, m, h, d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<i64>,
    /// Messages per page, 1-500.
    #[arg(long, default_value_t = mailmux_admin::pagination::DEFAULT_LIMIT)]
    pub limit: u32,
    /// `next_cursor` of the previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `--since`: Unix milliseconds as the API takes them, or a duration back from now.
fn parse_since(value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    let (number, unit) = value.split_at(value.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    let ago = number
        .parse::<u64>()
        .ok()
        .filter(|_| seconds > 0)
        .and_then(|n| n.checked_mul(seconds))
        .ok_or_else(|| {
            format!("{value:?}: expected Unix milliseconds or a time ago such as 30m, 2h, 7d")
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(Duration::from_secs(ago));
    Ok(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

pub async fn message_list(context: &Context, args: MessageListArgs) -> anyhow::Result<Shown> {
    let query = MessageQuery {
        status: args.status,
        since: args.since,
        limit: Some(args.limit),
        cursor: args.cursor,
    };
    let list = with_store(context, async |store| {
        messages::list(store, &args.tenant, &query).await
    })
    .await?;
    Shown::list(list, "messages", MESSAGE_COLUMNS)
}

pub async fn message_show(context: &Context, tenant_id: &str, id: &str) -> anyhow::Result<Shown> {
    let shown = with_store(context, async |store| {
        messages::show(store, tenant_id, id).await
    })
    .await?;
    Shown::object(shown)
}

pub async fn audit_list(
    context: &Context,
    tenant_id: Option<&str>,
    limit: u32,
    cursor: Option<String>,
) -> anyhow::Result<Shown> {
    let page = PageQuery {
        limit: Some(limit),
        cursor,
    };
    let entries = with_store(context, async |store| {
        // As the REST route: an unknown tenant is 404, not an empty log.
        if let Some(id) = tenant_id {
            lookup::tenant(store, id).await?;
        }
        audit::list(store, tenant_id, &page).await
    })
    .await?;
    Shown::list(entries, "entries", AUDIT_COLUMNS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_milliseconds_or_a_time_ago() {
        assert_eq!(parse_since("1700000000000"), Ok(1_700_000_000_000));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let two_hours = parse_since("2h").unwrap();
        assert!((now - two_hours - 7_200_000).abs() < 5_000, "{two_hours}");
        for bad in ["2w", "h", "", "-3m", "yesterday"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sqlite_paths_are_resolved_like_sqlite_does() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            sqlite_path("sqlite://./data/mailmux.db?mode=rwc"),
            Some(cwd.join("data/mailmux.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/m.db"),
            Some(PathBuf::from("/var/lib/m.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }
}
