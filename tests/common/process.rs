//! Temp dirs, the Python support processes (read line by line, killed on drop), and waiting for conditions.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailmux_core::sync::lock;
use serde_json::Value;

use super::READY_TIMEOUT;
use super::tools::{python, support_dir};

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
pub(super) struct SupportProcess {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub(super) lines: Arc<Mutex<Vec<String>>>,
    pub(super) port: u16,
    /// The first line, parsed (`{"port": N, …}`): what else the process reported at start.
    pub(super) first: Value,
}

impl SupportProcess {
    pub(super) fn spawn(what: &str, script: &str, args: &[String]) -> SupportProcess {
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
        let first = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
        let port = first["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("{what}: expected {{\"port\": N}}, got {line:?}"));
        SupportProcess {
            child,
            _stdin: stdin,
            lines,
            port,
            first,
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

pub(super) fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    f.write_all(data).expect("write");
    drop(f);
    std::fs::rename(&tmp, path).expect("rename");
}
