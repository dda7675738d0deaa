//! The operator's one-shot commands: each opens the store named by the configuration, does one
//! thing and returns what to print (JSON, or a table with `--output table`).
//!
//! One file per resource, as in the admin crate: `tenant.rs`, `domain.rs`, `credential.rs`,
//! `api_key.rs`, `address.rs` (receipt rules), `message.rs` (with the audit log),
//! `postmaster.rs`, `ses.rs`, `webhook.rs`; this file finds the configuration and opens the
//! store.
//!
//! Every command calls the same admin-crate operation as the matching REST handler, as the
//! actor `cli` in the audit log: there is no second implementation of any rule here.
//!
//! The configuration is found as `serve` finds it (`--config`, `$MAILMUX_CONFIG`,
//! `./mailmux.toml`, the embedded default), and a command other than `migrate` (and `serve`)
//! never creates a database: run from the wrong directory, it would otherwise make an empty
//! one there and report an empty relay, which looks like lost data.

pub mod address;
pub mod api_key;
pub mod credential;
pub mod domain;
pub mod message;
pub mod postmaster;
pub mod ses;
pub mod tenant;
pub mod webhook;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mailmux_admin::AdminError;
use mailmux_admin::pagination::{MAX_LIMIT, PageQuery};
use mailmux_core::Config;
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

/// Every item of a paged listing, page after page at the largest page size: `fetch` answers
/// one page's items and the cursor of the next.
async fn all_pages<T>(
    mut fetch: impl AsyncFnMut(&PageQuery) -> Result<(Vec<T>, Option<String>), AdminError>,
) -> Result<Vec<T>, AdminError> {
    let mut all = Vec::new();
    let mut page = PageQuery {
        limit: Some(MAX_LIMIT),
        cursor: None,
    };
    loop {
        let (items, next) = fetch(&page).await?;
        all.extend(items);
        match next {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(all),
        }
    }
}

/// Runs `operation` on the store named by `context`, closing it afterwards either way.
async fn with_store<T, F>(context: &Context, operation: F) -> anyhow::Result<T>
where
    F: AsyncFnOnce(&Store) -> Result<T, AdminError>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
