//! [`postgres_url`]: a fresh database on a private PostgreSQL cluster; [`psql`] to look inside.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::process::unique_suffix;
use super::tools::{find_tool, require_tool, support_dir};

struct PgCluster {
    /// `postgres://postgres@127.0.0.1:<port>` (no database).
    base: String,
}

/// A fresh, empty database for the caller, as a URL.
///
/// `$MAILMUX_TEST_POSTGRES_URL` set: a new database on that server (when `psql` can create one;
/// else the URL as given). Otherwise one private cluster per test binary, started on first use
/// by `tests/support/pg.sh` (Debian's `initdb`/`pg_ctl`, 127.0.0.1, a free port, trust auth)
/// and stopped by a watchdog when the test process exits. Each call creates
/// `test_<unique>` with `psql` and returns `postgres://postgres@127.0.0.1:<port>/test_<unique>`.
///
/// `None` (after printing `SKIPPED: ...`) when PostgreSQL is not installed; under `CI=true`
/// that panics instead: `let Some(url) = postgres_url() else { return };`
pub fn postgres_url() -> Option<String> {
    if let Ok(url) = std::env::var("MAILMUX_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        let (base, _) = split_db(&url);
        return Some(create_database(&base).unwrap_or(url));
    }
    if !require_tool("initdb") || !require_tool("pg_ctl") || !require_tool("psql") {
        return None;
    }
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    let cluster = CLUSTER.get_or_init(start_cluster);
    match cluster {
        Ok(c) => Some(
            create_database(&c.base)
                .unwrap_or_else(|e| panic!("create a test database on {}: {e}", c.base)),
        ),
        Err(e) => panic!("start the test PostgreSQL cluster: {e}"),
    }
}

/// Splits `postgres://u@h:p/db?x` into (`postgres://u@h:p`, `db?x`).
fn split_db(url: &str) -> (String, String) {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[scheme_end..].find('/') {
        Some(i) => (
            url[..scheme_end + i].to_string(),
            url[scheme_end + i + 1..].to_string(),
        ),
        None => (url.to_string(), String::new()),
    }
}

fn start_cluster() -> Result<PgCluster, String> {
    // Not a TestDir: the watchdog removes it once this process is gone.
    let dir = std::env::temp_dir().join(format!(
        "mailmux-pg-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let pg_sh = support_dir().join("pg.sh");
    let out = Command::new("bash")
        .arg(&pg_sh)
        .arg("start")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", pg_sh.display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "pg.sh start failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The watchdog: stops the cluster and removes its dir when this test process exits, however
    // it exits (statics are never dropped, and a killed process runs no code at all).
    Command::new("bash")
        .arg(&pg_sh)
        .arg("watch")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn pg.sh watch: {e}"))?;
    Ok(PgCluster {
        base: split_db(&url).0,
    })
}

fn create_database(base: &str) -> Result<String, String> {
    let psql = find_tool("psql").ok_or("psql not found")?;
    let name = format!("test_{}", unique_suffix());
    let out = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!("{base}/postgres"))
        .arg("-c")
        .arg(format!("CREATE DATABASE \"{name}\""))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run psql: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(format!("{base}/{name}"))
}

/// Runs `psql -X -A -t -v ON_ERROR_STOP=1 -d URL -c SQL`; returns its trimmed stdout, panics with
/// stderr on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let psql = find_tool("psql").expect("psql not found");
    let out = Command::new(psql)
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
