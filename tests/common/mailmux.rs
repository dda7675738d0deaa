//! [`Mailmux`]: the real `mailmux serve` binary on `127.0.0.1:0` listeners, with its data dir in a temp dir, and its CLI on the same data dir.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ADMIN_TOKEN;
use super::process::{TestDir, terminate};
use super::tools::mailmux_bin;

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
    /// The admin API as the operator: `(status, JSON body)`.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        super::http::http(
            self.admin(),
            method,
            path,
            Some(self.admin_token()),
            body.as_ref(),
        )
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
