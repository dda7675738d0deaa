//! Test harness for the admin API: the real router over a real store (SQLite in a temp dir, or
//! a fresh database on the Postgres named by `MAILMUX_TEST_POSTGRES_URL`), driven in-process
//! with `tower::ServiceExt::oneshot`.
//!
//! Postgres comes from `MAILMUX_TEST_POSTGRES_URL` or a private cluster started with
//! `tests/support/pg.sh`; without either the Postgres variants print a SKIPPED line and pass,
//! except under `CI=true`, where a missing Postgres fails the test.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use mailmux_admin::AdminState;
use mailmux_core::Config;
use mailmux_store::Store;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";

pub struct Harness {
    pub router: Router,
    pub store: Store,
    pub config: Arc<Config>,
    pub backend: &'static str,
    /// Reads queued messages back with their bodies (from the spool).
    pub queue: Arc<mailmux_queue::Queue>,
    dir: PathBuf,
    _jobs: mailmux_queue::Jobs,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        mailmux_core::now_ms() % 1_000_000
    )
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("mailmux-admin-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Configuration for tests: data dir in `dir`, DNS servers as given.
pub fn test_config(dir: &std::path::Path, dns: &[std::net::SocketAddr]) -> Config {
    let mut env = vec![
        (
            "MAILMUX_STORAGE__DATA_DIR".to_string(),
            dir.display().to_string(),
        ),
        ("MAILMUX_SMTP__HOSTNAME".into(), "relay.mailmux.test".into()),
    ];
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(|a| format!("\"{a}\"")).collect();
        env.push((
            "MAILMUX_DELIVERY__DNS_SERVERS".into(),
            format!("[{}]", list.join(",")),
        ));
    }
    Config::load(None, env).unwrap()
}

/// The Postgres server URL for tests: `MAILMUX_TEST_POSTGRES_URL`, else a private cluster
/// started once per test process with the repository's `tests/support/pg.sh` (Debian's
/// PostgreSQL binaries; stopped by pg.sh's watchdog when this process exits). None (after
/// printing SKIPPED) when neither is available; panics under CI=true instead.
pub fn postgres_server(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("MAILMUX_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    static CLUSTER: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    match CLUSTER.get_or_init(start_cluster) {
        Ok(url) => Some(url.clone()),
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: no Postgres for the admin tests under CI: {why}");
            }
            println!("SKIPPED {test} on Postgres: {why}");
            None
        }
    }
}

fn start_cluster() -> Result<String, String> {
    let pg_sh = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/pg.sh");
    if !pg_sh.exists() {
        return Err(format!("{} is missing", pg_sh.display()));
    }
    let dir = std::env::temp_dir().join(format!("mailmux-pg-{}", unique("admin-")));
    let out = std::process::Command::new("bash")
        .arg(&pg_sh)
        .arg("start")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run pg.sh: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "pg.sh start failed (no PostgreSQL binaries? set MAILMUX_TEST_POSTGRES_URL): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    // The cluster must not outlive this test process, however it ends.
    std::process::Command::new("bash")
        .arg(&pg_sh)
        .arg("watch")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn pg.sh watch: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Harness {
    pub async fn sqlite() -> Harness {
        Harness::sqlite_with_dns(&[]).await
    }

    pub async fn sqlite_with_dns(dns: &[std::net::SocketAddr]) -> Harness {
        let dir = temp_dir();
        let config = test_config(&dir, dns);
        let store = Store::connect(&config.database_url(), 4).await.unwrap();
        store.migrate().await.unwrap();
        Harness::new(store, config, "sqlite", dir).await
    }

    pub async fn postgres(test: &str) -> Option<Harness> {
        Harness::postgres_with_dns(test, &[]).await
    }

    /// A fresh database on the test server, so tests never see each other's rows.
    pub async fn postgres_with_dns(test: &str, dns: &[std::net::SocketAddr]) -> Option<Harness> {
        let server = postgres_server(test)?;
        let db = unique("mm_admin_");
        create_database(&server, &db).await;
        let url = with_database(&server, &db);
        let dir = temp_dir();
        let mut config = test_config(&dir, dns);
        config.storage.database_url = Some(url.clone());
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        Some(Harness::new(store, config, "postgres", dir).await)
    }

    async fn new(store: Store, config: Config, backend: &'static str, dir: PathBuf) -> Harness {
        let config = Arc::new(config);
        // A real queue for the send API; nobody delivers (the jobs are kept, not taken).
        let health = mailmux_core::health::Health::default();
        let (queue, jobs) = mailmux_queue::Queue::start(
            store.clone(),
            "n_admin_test".into(),
            &dir,
            &config.queue,
            &config.delivery,
            &health,
        )
        .await
        .unwrap();
        let router = mailmux_admin::router(AdminState {
            config: config.clone(),
            store: store.clone(),
            operator_token: Arc::new(OPERATOR_TOKEN.to_string()),
            metric_sources: vec![Arc::new(FixedMetric)],
            policy: Arc::new(mailmux_policy::Policy::new(&config, store.clone())),
            queue: queue.clone(),
            health,
            ses: None,
        })
        // What `into_make_service_with_connect_info` gives the real server: the client's
        // address (the send API's Received: header names it).
        .layer(axum::extract::connect_info::MockConnectInfo(
            std::net::SocketAddr::from(([127, 0, 0, 1], 40_000)),
        ));
        Harness {
            router,
            store,
            config,
            backend,
            queue,
            dir,
            _jobs: jobs,
        }
    }

    /// Sends one request; returns the status and the body as JSON (or as a JSON string when
    /// it is not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.call_raw(method, path, token, raw, "application/json")
            .await
    }

    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self
            .call_with_headers(method, path, token, body, content_type)
            .await;
        (status, value)
    }

    /// As [`Harness::call_raw`], with the response headers.
    pub async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(bytes) => request
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(bytes)),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    /// As the operator; panics unless the status is `want`.
    pub async fn op(&self, method: Method, path: &str, body: Option<Value>, want: u16) -> Value {
        let (status, value) = self
            .call(method.clone(), path, Some(OPERATOR_TOKEN), body)
            .await;
        assert_eq!(
            status.as_u16(),
            want,
            "{method} {path} ({}): {value}",
            self.backend
        );
        value
    }

    /// Creates a tenant; returns its id.
    pub async fn tenant(&self, name: &str, tier: &str) -> String {
        let created = self
            .op(
                Method::POST,
                "/api/tenants",
                Some(json!({"name": name, "tier": tier})),
                201,
            )
            .await;
        created["id"].as_str().unwrap().to_string()
    }

    /// Creates an API key for a tenant; returns the bearer token.
    pub async fn api_key(&self, tenant: &str) -> String {
        let created = self
            .op(
                Method::POST,
                &format!("/api/tenants/{tenant}/api-keys"),
                Some(json!({"name": "test"})),
                201,
            )
            .await;
        created["key"].as_str().unwrap().to_string()
    }
}

async fn create_database(server: &str, db: &str) {
    // The store has no raw-SQL API; a throwaway connection does it.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(server)
        .await
        .expect("connect to the test Postgres (MAILMUX_TEST_POSTGRES_URL)");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// `url` with its database path replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A metric source standing in for the SMTP listeners.
struct FixedMetric;

impl mailmux_core::MetricSource for FixedMetric {
    fn render(&self, out: &mut String) {
        mailmux_core::metrics::render_single(
            out,
            "mailmux_smtp_sessions_active",
            "gauge",
            "test source",
            3,
        );
    }
}

/// Generates `<name>_sqlite` and `<name>_postgres` tests running `scenario(harness)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::harness::Harness::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(h) =
                        $crate::harness::Harness::postgres(stringify!($scenario)).await
                    {
                        super::$scenario(h).await;
                    }
                }
            )*
        }
    };
}
