//! The end-to-end test harness: real processes on loopback, shared by every `tests/*.rs` through
//! `mod common;`.
//!
//! - [`DnsServer`]: an authoritative DNS server (tests/support/dns_server.py) serving MX/A/TXT
//!   records for test domains; records can be changed while it runs.
//! - [`Sink`]: a receiving SMTP server (tests/support/smtp_sink.py): the remote MTA, the
//!   smarthost, the bench sink. Every accepted message is kept byte for byte.
//! - [`Mailmux`]: the real `mailmux serve` binary on `127.0.0.1:0` listeners, with its data dir
//!   in a temp dir, and its CLI on the same data dir.
//! - [`postgres_url`]: a fresh database on a private PostgreSQL cluster.
//! - [`swaks`], [`submit_smtplib`] and [`smtplib_burst`]: real SMTP clients; [`http`]: a
//!   minimal HTTP client for the admin API.
//!
//! Nothing here listens on or talks to anything outside 127.0.0.1, and no port is fixed: every
//! server binds port 0 and reports the port it got.
//!
//! Missing tools: a test calls [`require_tool`] / [`require_python_module`] (or gets `None` from
//! [`postgres_url`]) and returns early, printing `SKIPPED: ...`; with `CI=true` a missing tool
//! fails the test instead, so CI can never pass by skipping.
//!
//! Every child process is killed when its guard is dropped (also while a failing test unwinds).
//! The DNS server and the sink also exit when their stdin closes, so they die with the test
//! process even when it is killed; the Postgres cluster has a watchdog for the same reason.
//! `mailmux serve` has neither: only a killed test binary can leave one running.
#![allow(clippy::disallowed_methods)] // synchronous tests driving real processes: no runtime here for std::thread::sleep to block
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailmux_core::sync::lock;
use serde_json::{Value, json};

/// The operator token every [`Mailmux`] is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a support process may take to print its `{"port": N}` line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

// ----------------------------------------------------------------------------------------------
// Paths and tools

/// The repository root (the root package's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/support/`, where the Python helpers and `pg.sh` live.
pub fn support_dir() -> PathBuf {
    repo_root().join("tests").join("support")
}

/// The Python with the test requirements: `$MAILMUX_TEST_PYTHON`, else `<repo>/.venv/bin/python3`
/// (created by `.ci/run`).
pub fn python() -> PathBuf {
    match std::env::var_os("MAILMUX_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv").join("bin").join("python3"),
    }
}

/// The `mailmux` binary under test (built by cargo for this test run).
pub fn mailmux_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailmux"))
}

fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("true" | "1" | "yes")
    )
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Reports a missing tool: panics under `CI=true`, else prints `SKIPPED: ...` and returns false
/// so the caller can `return`.
fn missing(what: &str) -> bool {
    if in_ci() {
        panic!(
            "{}: {what} is required but not installed (CI=true; .ci/run installs it)",
            current_test()
        );
    }
    eprintln!(
        "SKIPPED: {}: {what} not installed (run .ci/run or install it)",
        current_test()
    );
    false
}

/// Finds an executable: an absolute/relative path as is, else on `PATH`, else (for PostgreSQL's
/// server tools, which Debian keeps off `PATH`) in the newest `/usr/lib/postgresql/*/bin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| p.is_file();
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if is_exe(&p) {
                return Some(p);
            }
        }
    }
    pg_bindir().map(|d| d.join(name)).filter(|p| is_exe(p))
}

/// The newest PostgreSQL server binary dir (`/usr/lib/postgresql/<v>/bin` on Debian).
pub fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

/// True when `name` can be run. Missing: panics under `CI=true`, else prints
/// `SKIPPED: <test>: <name> not installed ...` and returns false:
/// `if !require_tool("swaks") { return; }`
pub fn require_tool(name: &str) -> bool {
    find_tool(name).is_some() || missing(name)
}

/// True when the test Python exists and can import `module` (e.g. `"aiosmtpd"`, `"dkim"`).
/// Missing: as [`require_tool`].
pub fn require_python_module(module: &str) -> bool {
    let py = python();
    if !py.is_file() {
        return missing(&format!("python venv ({})", py.display()));
    }
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || missing(&format!("python module {module} (in {})", py.display()))
}

// ----------------------------------------------------------------------------------------------
// Temp dirs and child processes

/// A directory under the system temp dir, removed on drop unless the test is failing (then its
/// path is printed, to look at logs and received messages) or `MAILMUX_TEST_KEEP=1`.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(prefix: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MAILMUX_TEST_KEEP").is_some() {
            eprintln!("kept test dir {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A unique-enough lowercase suffix for names (databases, tenants) in one test run.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos & 0xff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Python support process: stdin held open (it exits on EOF), stdout read line by line in a
/// thread (the first line is `{"port": N}`), killed and reaped on drop.
struct SupportProcess {
    child: Child,
    _stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl SupportProcess {
    fn spawn(what: &str, script: &str, args: &[String]) -> SupportProcess {
        let script = support_dir().join(script);
        let mut child = Command::new(python())
            .arg("-u")
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what} ({}): {e}", script.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                let mut first = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match first.take() {
                        Some(tx) => {
                            let _ = tx.send(line);
                        }
                        None => lock(&lines).push(line),
                    }
                }
            });
        }
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{what} did not report its port within {READY_TIMEOUT:?} (exit: {status:?})"
                );
            }
        };
        let port = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("{what}: expected {{\"port\": N}}, got {line:?}"));
        SupportProcess {
            child,
            _stdin: stdin,
            lines,
            port,
        }
    }
}

impl Drop for SupportProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child` (via kill(1): no unsafe here) and waits up to `timeout` for it to
/// exit; SIGKILL after that. Returns how it exited.
pub fn terminate(child: &mut Child, timeout: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().expect("wait for child")
}

/// Polls `f` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    f.write_all(data).expect("write");
    drop(f);
    std::fs::rename(&tmp, path).expect("rename");
}

// ----------------------------------------------------------------------------------------------
// DNS

/// The authoritative test DNS server on 127.0.0.1 (UDP and TCP on one port).
///
/// Records are `{"name", "type", "value", "ttl"?}` with type A, AAAA, MX (`"10 mx.a.test"`),
/// TXT (a string, split into 255-byte strings when longer, or a list of strings), CNAME, NS,
/// PTR, SRV. Names under a known zone (the last two labels of any record name, or an explicit
/// `"zones"` list) that have no records answer NXDOMAIN; TTLs default to 0.
pub struct DnsServer {
    process: SupportProcess,
    zone_file: PathBuf,
    _dir: TestDir,
}

impl DnsServer {
    /// Starts the server with `records`: a JSON array of records, or a whole zone object
    /// `{"zones": [...], "records": [...]}`. Panics if it cannot start; call
    /// [`require_python_module`]`("dnslib")` first to skip when the venv is missing.
    pub fn start(records: Value) -> DnsServer {
        let dir = TestDir::new("mailmux-dns");
        let zone_file = dir.path().join("zone.json");
        write_atomic(&zone_file, zone_json(records).to_string().as_bytes());
        let process = SupportProcess::spawn(
            "dns_server.py",
            "dns_server.py",
            &["--zone".into(), zone_file.display().to_string()],
        );
        DnsServer {
            process,
            zone_file,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `127.0.0.1:<port>`, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The value for `MAILMUX_DELIVERY__DNS_SERVERS`: `["127.0.0.1:<port>"]`.
    pub fn dns_servers_env(&self) -> String {
        json!([self.addr().to_string()]).to_string()
    }

    /// Replaces the zone (same forms as [`DnsServer::start`]). The file is replaced atomically
    /// (a new inode, so the server sees the change even within one mtime tick); the next query
    /// is answered from the new data.
    pub fn set_records(&self, records: Value) {
        write_atomic(&self.zone_file, zone_json(records).to_string().as_bytes());
    }
}

fn zone_json(records: Value) -> Value {
    match records {
        Value::Array(_) => json!({ "records": records }),
        Value::Object(_) => records,
        other => panic!("DNS records must be an array or a zone object, got {other}"),
    }
}

// ----------------------------------------------------------------------------------------------
// SMTP sink

/// One message the sink accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sink's sequence number (1, 2, ...), in order of acceptance.
    pub seq: u64,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The DATA content exactly as received, after dot-unstuffing.
    pub raw: Vec<u8>,
    /// Everything the sink recorded: `mail_options`, `rcpt_options`, `peer`, `helo`, `tls`,
    /// `auth_login`, `received_at`.
    pub meta: Value,
}

impl Received {
    /// The raw message as text (lossy), for `contains` checks on headers.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The value of the first header `name` (case-insensitive), unfolded; see [`header`].
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.raw, name)
    }
}

/// The value of the first header field `name` (case-insensitive) of a raw message, unfolded
/// and trimmed (`"<id@host>"` for Message-ID). Only the header section is searched.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = found.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if found.is_some() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case(name)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// The receiving SMTP server (aiosmtpd) on 127.0.0.1, in its own process, keeping every accepted
/// message in its temp dir.
///
/// Switches (see `smtp_sink.py --help`): `--reject-rcpt REGEX`, `--tempfail-rcpt REGEX:N`,
/// `--tempfail-data N`, `--no-8bitmime`, `--no-smtputf8`, `--starttls CERT KEY`,
/// `--starttls-self-signed`, `--require-starttls`, `--implicit-tls`, `--auth USER:PASS`,
/// `--delay-ms N`, `--discard`, `--close-after-dot N` (read the message, close without a reply),
/// `--data-log FILE` (one JSON line per DATA transaction, as its final dot arrives),
/// `--address IP` with `--port N` (e.g. a second sink on 127.0.0.2 with the first one's port).
pub struct Sink {
    process: SupportProcess,
    dir: TestDir,
}

impl Sink {
    /// Starts the sink with extra `args` (it always gets `--dir` and `--count-file` in its own
    /// temp dir). Panics if it cannot start; call [`require_python_module`]`("aiosmtpd")` first.
    pub fn start(args: &[&str]) -> Sink {
        let dir = TestDir::new("mailmux-sink");
        let mut all: Vec<String> = vec![
            "--dir".into(),
            dir.path().join("messages").display().to_string(),
            "--count-file".into(),
            dir.path().join("counts.json").display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let process = SupportProcess::spawn("smtp_sink.py", "smtp_sink.py", &all);
        Sink { process, dir }
    }

    pub fn port(&self) -> u16 {
        self.process.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// Where `<seq>.eml` / `<seq>.json` land.
    pub fn messages_dir(&self) -> PathBuf {
        self.dir.path().join("messages")
    }

    /// The sink's counters `{"messages", "recipients", "rejected", "tempfailed", "connections",
    /// "data_received", "closed_after_dot"}` (refreshed by the sink every 100 ms; before its
    /// first write, the first four as zero).
    pub fn counts(&self) -> Value {
        std::fs::read(self.dir.path().join("counts.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(
                || json!({"messages": 0, "recipients": 0, "rejected": 0, "tempfailed": 0}),
            )
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let Ok(entries) = std::fs::read_dir(self.messages_dir()) else {
            return Vec::new();
        };
        let mut seqs: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .collect();
        seqs.sort_unstable();
        seqs.into_iter()
            .filter_map(|seq| self.read_message(seq))
            .collect()
    }

    fn read_message(&self, seq: u64) -> Option<Received> {
        // The sink writes <seq>.eml before <seq>.json, both by rename: seeing the .json means
        // the .eml is complete.
        let base = self.messages_dir().join(format!("{seq:06}"));
        let meta: Value =
            serde_json::from_slice(&std::fs::read(base.with_extension("json")).ok()?).ok()?;
        let raw = std::fs::read(base.with_extension("eml")).ok()?;
        Some(Received {
            seq,
            // aiosmtpd reports the null sender as "<>"; the envelope's reverse path is empty.
            mail_from: match meta["mail_from"].as_str().unwrap_or_default() {
                "<>" => String::new(),
                other => other.to_string(),
            },
            rcpt_tos: meta["rcpt_tos"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            raw,
            meta,
        })
    }

    /// Waits until at least `n` messages have arrived and returns all of them; panics after
    /// `timeout` saying how many did arrive.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        match wait_until(timeout, || {
            let msgs = self.messages();
            (msgs.len() >= n).then_some(msgs)
        }) {
            Some(msgs) => msgs,
            None => panic!(
                "sink on port {}: expected {n} message(s) within {timeout:?}, got {} (counts {})",
                self.port(),
                self.messages().len(),
                self.counts()
            ),
        }
    }
}

// ----------------------------------------------------------------------------------------------
// mailmux

/// The bound listener addresses `mailmux serve` writes to `<data_dir>/listeners.json`.
#[derive(Debug, Clone, Copy)]
pub struct Listeners {
    pub submission: SocketAddr,
    pub submission_tls: SocketAddr,
    pub mx: SocketAddr,
    pub admin: SocketAddr,
}

/// A tenant made by [`Mailmux::setup_tenant`], with one verified domain and one credential.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: String,
    pub domain: String,
    pub username: String,
    pub password: String,
}

/// The real `mailmux serve`, with every listener on `127.0.0.1:0`, its data dir (and SQLite
/// database, unless a Postgres URL is given) in a temp dir, `RUST_LOG=info` output in
/// `<dir>/mailmux.log`. Killed on drop; on a failing test the end of the log is printed.
pub struct Mailmux {
    child: Option<Child>,
    dir: TestDir,
    env: Vec<(String, String)>,
    listeners: Listeners,
}

impl Mailmux {
    /// Starts `mailmux serve` with SQLite in the temp dir, plus `env` (e.g.
    /// `("MAILMUX_DELIVERY__MX_PORT", "2526")`), which overrides the harness's own settings.
    /// Waits (≤ 30 s) for `listeners.json`.
    pub fn start(env: &[(&str, &str)]) -> Mailmux {
        Self::start_inner(None, env)
    }

    /// As [`Mailmux::start`], on the Postgres database `url` (see [`postgres_url`]).
    pub fn start_with_db(url: &str, env: &[(&str, &str)]) -> Mailmux {
        Self::start_inner(Some(url), env)
    }

    fn start_inner(db: Option<&str>, extra: &[(&str, &str)]) -> Mailmux {
        let dir = TestDir::new("mailmux-e2e");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let mut env: Vec<(String, String)> = vec![
            (
                "MAILMUX_STORAGE__DATA_DIR".into(),
                data_dir.display().to_string(),
            ),
            ("MAILMUX_SMTP__SUBMISSION".into(), "127.0.0.1:0".into()),
            ("MAILMUX_SMTP__SUBMISSION_TLS".into(), "127.0.0.1:0".into()),
            ("MAILMUX_SMTP__MX".into(), "127.0.0.1:0".into()),
            ("MAILMUX_ADMIN__LISTEN".into(), "127.0.0.1:0".into()),
            ("MAILMUX_ADMIN__TOKEN".into(), ADMIN_TOKEN.into()),
            // Direct MX delivery refuses loopback and private addresses unless allowed; every
            // test destination (sink, dead listener) is on 127.0.0.0/8.
            (
                "MAILMUX_DELIVERY__ALLOWED_NETWORKS".into(),
                "[\"127.0.0.0/8\"]".into(),
            ),
            ("RUST_LOG".into(), "info".into()),
            // The log is a file read by people: no ANSI colours (tracing-subscriber honours it).
            ("NO_COLOR".into(), "1".into()),
            ("RUST_BACKTRACE".into(), "1".into()),
        ];
        if let Some(url) = db {
            env.push(("MAILMUX_STORAGE__DATABASE_URL".into(), url.to_string()));
        }
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut mm = Mailmux {
            child: None,
            dir,
            env,
            listeners: Listeners {
                submission: SocketAddr::from(([127, 0, 0, 1], 0)),
                submission_tls: SocketAddr::from(([127, 0, 0, 1], 0)),
                mx: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
        };
        mm.spawn();
        mm
    }

    /// A `mailmux` command with the harness's environment: inherited `MAILMUX_<S>__<K>`
    /// variables are removed (a developer's shell must not leak into tests), ours are set, and
    /// the working dir is the temp dir (so a relative path never lands in the repo).
    fn command(&self) -> Command {
        let mut cmd = Command::new(mailmux_bin());
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && k.starts_with("MAILMUX_")
                && k.contains("__")
            {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    fn spawn(&mut self) {
        let listeners_file = self.listeners_file();
        let _ = std::fs::remove_file(&listeners_file);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open mailmux.log");
        let _ = writeln!(log, "===== harness: mailmux serve starting =====");
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::from(log.try_clone().expect("clone log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", mailmux_bin().display()));
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = std::fs::read(&listeners_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| parse_listeners(&v))
            {
                self.listeners = l;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "mailmux serve exited before listening ({status}); log:\n{}",
                    self.log_tail(100)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "mailmux serve wrote no {} within 30 s; log:\n{}",
                    listeners_file.display(),
                    self.log_tail(100)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn listeners(&self) -> Listeners {
        self.listeners
    }
    pub fn submission(&self) -> SocketAddr {
        self.listeners.submission
    }
    pub fn submission_tls(&self) -> SocketAddr {
        self.listeners.submission_tls
    }
    pub fn mx(&self) -> SocketAddr {
        self.listeners.mx
    }
    pub fn admin(&self) -> SocketAddr {
        self.listeners.admin
    }
    /// `http://127.0.0.1:<admin port>`
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.listeners.admin)
    }
    pub fn admin_token(&self) -> &'static str {
        ADMIN_TOKEN
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn listeners_file(&self) -> PathBuf {
        self.data_dir().join("listeners.json")
    }
    /// The environment the harness gives `mailmux` (for running it some other way).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
    /// The OS pid of the running `mailmux serve`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mailmux.log")
    }
    /// Everything `mailmux serve` printed so far (all runs, separated by harness lines).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `mailmux <args>` with the same environment (data dir, database) and returns its raw
    /// output, whatever the exit status.
    pub fn cli_output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", mailmux_bin().display()))
    }

    /// Runs `mailmux <args>` and parses its stdout as JSON; panics with stderr on a non-zero
    /// exit or non-JSON output.
    pub fn cli<I, S>(&self, args: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.cli_output(&args);
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "mailmux {shown}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("mailmux {shown}: stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}")
        })
    }

    /// `mailmux tenant create --name NAME --tier TIER` → the tenant id.
    pub fn create_tenant(&self, name: &str, tier: &str) -> String {
        let v = self.cli(["tenant", "create", "--name", name, "--tier", tier]);
        json_id(&v["id"]).unwrap_or_else(|| panic!("tenant create: no id in {v}"))
    }

    /// `mailmux domain add --tenant ID --domain DOMAIN --verified` → its JSON (DNS records).
    pub fn add_verified_domain(&self, tenant: &str, domain: &str) -> Value {
        self.cli([
            "domain",
            "add",
            "--tenant",
            tenant,
            "--domain",
            domain,
            "--verified",
        ])
    }

    /// `mailmux credential create --tenant ID` → (username, password).
    pub fn create_credential(&self, tenant: &str) -> (String, String) {
        let v = self.cli(["credential", "create", "--tenant", tenant]);
        let field = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("credential create: no {k} in {v}"))
                .to_string()
        };
        (field("username"), field("password"))
    }

    /// A tenant of `tier` named `name`, with `domain` added as verified and one credential.
    pub fn setup_tenant(&self, name: &str, tier: &str, domain: &str) -> TestTenant {
        let id = self.create_tenant(name, tier);
        self.add_verified_domain(&id, domain);
        let (username, password) = self.create_credential(&id);
        TestTenant {
            id,
            domain: domain.to_string(),
            username,
            password,
        }
    }

    /// SIGKILL, as a crash: nothing gets to flush. Returns once the process is reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (graceful shutdown), waiting up to `timeout`, then SIGKILL. Returns the exit
    /// status, or `None` if it was not running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.take().map(|mut c| terminate(&mut c, timeout))
    }

    /// Kills the running process (if any, with SIGKILL), then starts `mailmux serve` again on
    /// the same data dir, database and environment. Listeners bind port 0 again, so the
    /// addresses change: read them after the restart.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Mailmux {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "----- mailmux log ({}), last 200 lines -----\n{}\n----- end of mailmux log -----",
                self.log_path().display(),
                self.log_tail(200)
            );
        }
    }
}

fn parse_listeners(v: &Value) -> Option<Listeners> {
    let addr = |k: &str| v[k].as_str()?.parse::<SocketAddr>().ok();
    Some(Listeners {
        submission: addr("submission")?,
        submission_tls: addr("submission_tls")?,
        mx: addr("mx")?,
        admin: addr("admin")?,
    })
}

/// An id given as a JSON string or number, as a string.
fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

// ----------------------------------------------------------------------------------------------
// Postgres

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

// ----------------------------------------------------------------------------------------------
// Clients

/// Runs `swaks <args>` (stdin closed, so it never prompts) and returns whether it succeeded
/// (exit 0: the message was accepted) and its stdout transcript; stderr is echoed to the test
/// output. Call [`require_tool`]`("swaks")` first. [`swaks_status`] gives the exit code.
///
/// Mind swaks' data handling (`--data @FILE`): it turns lone LFs into CRLF, dot-stuffs, removes
/// a final `\r\n.\r\n` if the data has one, and then appends `\r\n.\r\n` — so a file that ends
/// in CRLF arrives with one more CRLF (a blank line) at the end. To send a message byte-exact:
/// end the file with `.\r\n` after its last CRLF, or use `--no-data-fixup` with a file of
/// [`swaks_data`]`(message)` (which also keeps lone LFs and `%TOKENS%` as they are).
pub fn swaks(args: &[&str]) -> (bool, String) {
    let (status, transcript) = swaks_status(args);
    (status.success(), transcript)
}

/// As [`swaks`], with the exit status.
/// Exit status (`man swaks`): 0 accepted; 2 cannot connect; 23 MAIL refused; 24 no RCPT
/// accepted; 25 DATA refused; 26 refused after the data; 28 AUTH failed; 29 TLS failed.
pub fn swaks_status(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new("swaks")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run swaks: {e}"));
    if !out.stderr.is_empty() {
        eprintln!("swaks stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A message as SMTP DATA on the wire: dot-stuffed, a CRLF at the end if it has none, then
/// the terminating `.\r\n` (for raw clients). The bytes are otherwise unchanged.
pub fn smtp_data(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The file content for `swaks --no-data-fixup --data @FILE` that delivers `message` byte for
/// byte: [`smtp_data`] without its last CRLF (swaks adds a CRLF after the data it sends).
pub fn swaks_data(message: &[u8]) -> Vec<u8> {
    let mut data = smtp_data(message);
    data.truncate(data.len() - 2);
    data
}

/// Submits `message` with Python's smtplib (tests/support/submit_smtplib.py) to `addr`, over
/// STARTTLS (or implicit TLS when `implicit_tls`), AUTH as `user`/`password`, from `from` to
/// each of `to`. Returns the script's JSON report: `code`/`text` of the final reply (after DATA
/// when it got that far), `ok`, `stage`, per-recipient `rcpt` replies, and `error` (exception
/// class) on failure.
pub fn submit_smtplib(
    addr: SocketAddr,
    user: &str,
    password: &str,
    from: &str,
    to: &[&str],
    message: &[u8],
    implicit_tls: bool,
) -> Value {
    let port = addr.port().to_string();
    let host = addr.ip().to_string();
    let mut args = vec![
        "--host",
        &host,
        "--port",
        &port,
        "--user",
        user,
        "--password",
        password,
        "--from",
        from,
    ];
    args.push(if implicit_tls { "--tls" } else { "--starttls" });
    for rcpt in to {
        args.push("--to");
        args.push(rcpt);
    }
    submit_smtplib_args(&args, message).1
}

/// Submits `body` from `from` as `acct` over STARTTLS + AUTH with smtplib; `repeat`
/// transactions on one connection, stopping at the first refusal. The report: `ok`, `stage`,
/// `code`/`text` of the last reply, `replies` (one per accepted transaction). The client waits
/// up to a minute for each reply, so a relay waiting on its database answers before it gives up.
pub fn submit_as(
    mm: &Mailmux,
    acct: &TestTenant,
    from: &str,
    to: &[&str],
    body: &[u8],
    repeat: usize,
) -> Value {
    let (port, repeat) = (mm.submission().port().to_string(), repeat.to_string());
    let mut args = vec![
        "--port",
        &port,
        "--starttls",
        "--user",
        &acct.username,
        "--password",
        &acct.password,
        "--from",
        from,
        "--repeat",
        &repeat,
        "--timeout",
        "60",
    ];
    for rcpt in to {
        args.push("--to");
        args.push(rcpt);
    }
    submit_smtplib_args(&args, body).1
}

/// Runs `tests/support/submit_smtplib.py <args>` (`--port`, `--tls`/`--starttls`/`--no-starttls`,
/// `--user/--password`, `--auth-mech`, `--from`, `--to`..., `--mail-option`, `--repeat`, a
/// message file or stdin) with `message` on stdin unless a file is named in `args`. Returns
/// (accepted, its JSON report).
pub fn submit_smtplib_args(args: &[&str], message: &[u8]) -> (bool, Value) {
    let mut child = Command::new(python())
        .arg(support_dir().join("submit_smtplib.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run submit_smtplib.py: {e}"));
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A file argument means the script does not read stdin: ignore EPIPE.
        let _ = stdin.write_all(message);
    }
    let out = child.wait_with_output().expect("wait submit_smtplib.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "submit_smtplib.py printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Runs a Python snippet with the test Python; returns stdout, panics with stderr on failure.
pub fn python_eval(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python().display()));
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`require_python_module`] for each of `modules`, stopping at the first missing one.
pub fn require_python_modules(modules: &[&str]) -> bool {
    modules.iter().all(|m| require_python_module(m))
}

/// The venv the Python support processes ([`DnsServer`], [`Sink`], [`submit_smtplib`]) need,
/// checked once per test: `if !require_support() { return; }`
pub fn require_support() -> bool {
    require_python_module("aiosmtpd") && require_python_module("dnslib")
}

/// Concurrent SMTP sessions sending a burst (tests/support/burst_smtplib.py): `sessions` threads,
/// each sending `messages` messages over STARTTLS + AUTH, each with a unique Message-ID. The
/// client reports every 250 the moment it arrives, so a crash test knows exactly what the relay
/// acknowledged.
pub struct Burst {
    child: Child,
    accepted: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Starts a [`Burst`] against `addr`, from `from` to `to`.
pub fn smtplib_burst(
    addr: SocketAddr,
    user: &str,
    password: &str,
    from: &str,
    to: &str,
    sessions: usize,
    messages: usize,
) -> Burst {
    let mut child = Command::new(python())
        .arg("-u")
        .arg(support_dir().join("burst_smtplib.py"))
        .args([
            "--host",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
        ])
        .args([
            "--user",
            user,
            "--password",
            password,
            "--from",
            from,
            "--to",
            to,
        ])
        .args([
            "--sessions",
            &sessions.to_string(),
            "--messages",
            &messages.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run burst_smtplib.py: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (accepted, errors) = (Arc::clone(&accepted), Arc::clone(&errors));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if let Some(id) = v["accepted"].as_str() {
                    lock(&accepted).push(id.to_string());
                } else {
                    lock(&errors).push(line);
                }
            }
        })
    };
    Burst {
        child,
        accepted,
        errors,
        reader: Some(reader),
    }
}

impl Burst {
    /// The Message-IDs acknowledged with 250 so far.
    pub fn accepted(&self) -> Vec<String> {
        lock(&self.accepted).clone()
    }

    /// What the sessions reported other than acceptances (errors, lost connections).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    /// Waits until at least `n` messages were acknowledged; returns how many were. Panics after
    /// `timeout`, or if the client finished with fewer.
    pub fn wait_for_accepted(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let count = lock(&self.accepted).len();
            if count >= n {
                return count;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // Let the reader catch up with the last lines before judging.
                std::thread::sleep(Duration::from_millis(50));
                let count = lock(&self.accepted).len();
                assert!(
                    count >= n,
                    "burst: {count} of {n} acknowledged ({}); errors: {:?}",
                    if exited {
                        "client finished"
                    } else {
                        "timed out"
                    },
                    self.errors()
                );
                return count;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (≤ 120 s, then kills it) for the client to finish — its sessions stop by
    /// themselves once the relay is gone — and returns every acknowledged Message-ID.
    pub fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.accepted()
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------------------------
// HTTP

/// A minimal HTTP/1.1 client for the admin API: one request per connection
/// (`Connection: close`). Returns the status and the body as JSON (a JSON string when it is
/// not JSON).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let (status, _, value) = http_with_headers(addr, method, path, token, body);
    (status, value)
}

/// As [`http`], with the response's header fields (names lowercased).
pub fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, Value) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("HTTP response head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, headers, value)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}
