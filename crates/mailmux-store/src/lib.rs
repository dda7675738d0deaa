//! mailmux-store: persistence on SQLite (default, one node) and Postgres (several nodes).
//!
//! One SQL text serves both backends through sqlx's `Any` driver: both accept `$N`
//! placeholders, integers are `BIGINT`/`INTEGER` (decoded as `i64`) and booleans are 0/1
//! integers. The one query that must differ (claiming due messages, which needs
//! `FOR UPDATE SKIP LOCKED` on Postgres) is chosen by [`Backend`].

mod api_keys;
mod audit;
mod credentials;
mod dkim_keys;
mod domains;
mod history;
mod inbound;
mod key_vault;
mod postmaster;
mod queue;
mod receipt_rules;
mod return_paths;
mod ses;
mod srs_secret;
mod stats;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;
mod tenants;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor};

pub use api_keys::ApiKey;
pub use audit::{AuditEntry, AuditRecord};
pub use dkim_keys::{DkimKey, DkimKeyStatus, DkimSigningState, DomainCheck};
pub use history::{AttemptView, MessageFilter, MessageState, MessageView, RecipientView};
pub use inbound::InboundMessage;
pub use key_vault::{KeyVaultError, MasterKey, sync_dir};
pub use queue::QUOTA_WINDOW_MS;
pub use return_paths::{ReturnPath, ReturnPathCheck};
pub use ses::{SesIdentity, SesStep, SesTenantRecord};
pub use stats::TenantCounters;
pub use tenants::TenantDeletion;
pub use webhooks::{DeliveryOutcome, NewWebhookDelivery, Webhook, WebhookAttempt, WebhookDelivery};

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A tenant limit (max_users, max_domains) would be exceeded; the text says which.
    #[error("{0}")]
    LimitReached(String),
    /// The row is still referred to (an endpoint a receipt rule uses); the text says by what.
    #[error("{0}")]
    InUse(String),
    #[error("cannot prepare database location {path}: {source}")]
    Location {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Unique-constraint violations become `Conflict(what)`; everything else stays as it is.
    fn conflict_or(err: sqlx::Error, what: impl Into<String>) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(what.into())
            }
            _ => StoreError::Database(err),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Handle to the database; cheap to clone (a pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../sql/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../sql/postgres");

impl Store {
    /// Opens a pool on `url` (`sqlite://PATH` or `postgres://…`). A SQLite file and its
    /// directory are created if missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10));
        let options = match backend {
            // Durability: WAL with synchronous=FULL fsyncs the log at every commit, so a
            // committed message survives power loss, not only a crash. Group commit in the
            // queue makes that one fsync per batch rather than per message.
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                    )
                    .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let pool = options.connect(&url).await?;
        Ok(Store { pool, backend })
    }

    /// Begins a write transaction in which `tenant_id`'s row is held, so that counting the
    /// tenant's rows and inserting one more is exact under concurrency: on Postgres the row is
    /// locked (`FOR UPDATE`: another node's transaction for the tenant waits, and its count
    /// then sees this one's insert); on SQLite the transaction takes the database's write lock
    /// from its start (`BEGIN IMMEDIATE`), which serialises writers.
    async fn begin_for_tenant(&self, tenant_id: &str) -> Result<sqlx::Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                    .bind(tenant_id)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Applies the migrations in `sql/<backend>/` that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Whether the database holds mailmux's schema (its migrations table exists). The CLI
    /// asks before anything else, so that a command aimed at the wrong database says so
    /// instead of quietly creating an empty schema there.
    pub async fn is_migrated(&self) -> Result<bool> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
        };
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await?;
        Ok(count > 0)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A trivial query: is the database answering?
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://PATH` → creates PATH's directory and asks sqlx to create the file (`mode=rwc`).
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path != ":memory:"
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Location {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(match query {
        Some(query) if query.contains("mode=") => format!("sqlite://{path}?{query}"),
        Some(query) => format!("sqlite://{path}?{query}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    })
}

fn bool_to_i64(value: bool) -> i64 {
    i64::from(value)
}
