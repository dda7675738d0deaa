//! Real SMTP clients: swaks, Python smtplib (one message, or a burst of sessions; a message to
//! the MX: [`mx_send`]).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailmux_core::sync::lock;
use serde_json::Value;

use super::mailmux::{Mailmux, TestTenant};
use super::process::TestDir;
use super::tools::{python, require_python_module, support_dir};

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

/// Sends `message` (exact bytes in a file) from `from` to `to` on the MX at `mx` over smtplib; the reply to MAIL
/// when it is refused, else to the end of DATA.
pub fn mx_send(mx: SocketAddr, from: &str, to: &str, message: &[u8]) -> (u16, String) {
    let code = r#"
import json, smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("mta.sender.test")
code, text = s.mail(sys.argv[3])
if code == 250:
    code, text = s.rcpt(sys.argv[4])
if code == 250:
    code, text = s.data(open(sys.argv[5], "rb").read())
print(json.dumps([code, text.decode()]))
"#;
    let dir = TestDir::new("mx-send");
    let file = dir.path().join("m.eml");
    std::fs::write(&file, message).unwrap();
    let port = mx.port().to_string();
    let out = python_eval(
        code,
        &["127.0.0.1", &port, from, to, file.to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}
