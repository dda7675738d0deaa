//! What the fault tests share: DNS and relay nodes, the sending tenant, what the relay and the
//! receiving side say about a message, a dead destination, continuous load, Postgres.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{DnsServer, Mailmux, Sink, TestTenant, http};
use mailmux_core::sync::lock;
use serde_json::{Value, json};

// ----------------------------------------------------------------------------------------------
// Set-up: DNS, relay nodes, the sending tenant

/// The sending tenant's domain; its MX is the sink too, so DSNs to the sender arrive there.
pub(crate) const SENDER_DOMAIN: &str = "acme.test";
pub(crate) const SENDER: &str = "app@acme.test";

/// DNS: sink.test and acme.test have their MX on 127.0.0.1 (where the sink listens), plus
/// `extra` records.
pub(crate) fn dns(extra: &[Value]) -> DnsServer {
    let mut records = vec![
        json!({"name": "sink.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "mx.sink.test", "type": "A", "value": "127.0.0.1"}),
        json!({"name": "acme.test", "type": "MX", "value": "10 mx.sink.test"}),
    ];
    records.extend_from_slice(extra);
    DnsServer::start(json!({ "records": records }))
}

/// A relay node delivering over `dns` to port `mx_port`, quick to retry (1 s, no growth) and
/// to poll, plus `extra` (which wins); on the Postgres database `db` when given.
pub(crate) fn node(
    dns: &DnsServer,
    mx_port: u16,
    extra: &[(&str, &str)],
    db: Option<&str>,
) -> Mailmux {
    let (dns_servers, port) = (dns.dns_servers_env(), mx_port.to_string());
    let mut env: Vec<(&str, &str)> = vec![
        ("MAILMUX_DELIVERY__DNS_SERVERS", &dns_servers),
        ("MAILMUX_DELIVERY__MX_PORT", &port),
        ("MAILMUX_DELIVERY__RETRY_INITIAL_SECS", "1"),
        ("MAILMUX_DELIVERY__RETRY_FACTOR", "1.0"),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS", "200"),
    ];
    env.extend_from_slice(extra);
    match db {
        Some(url) => Mailmux::start_with_db(url, &env),
        None => Mailmux::start(&env),
    }
}

/// An enterprise tenant (no rate, quota or connection limits: these tests are about delivery)
/// sending from acme.test.
pub(crate) fn sender(mm: &Mailmux) -> TestTenant {
    mm.setup_tenant("acme", "enterprise", SENDER_DOMAIN)
}

/// Gives node `to` the master key of node `from` (the key that seals the DKIM keys in the
/// shared database; created by the CLI on `from` with the first domain), as an operator copies
/// it to every node, and restarts `to` so that it starts with it.
pub(crate) fn share_master_key(from: &Mailmux, to: &mut Mailmux) {
    let key = from.data_dir().join("master.key");
    std::fs::copy(&key, to.data_dir().join("master.key"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", key.display()));
    to.restart();
}

/// A small message whose Message-ID is `<{tag}@acme.test>`.
pub(crate) fn message(tag: &str, to: &str) -> Vec<u8> {
    format!(
        "From: App <{SENDER}>\r\nTo: <{to}>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@{SENDER_DOMAIN}>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n\
         hello from {tag}\r\n"
    )
    .into_bytes()
}

/// Submits from [`SENDER`] (see [`common::submit_as`]).
pub(crate) fn submit(
    mm: &Mailmux,
    acct: &TestTenant,
    to: &[&str],
    body: &[u8],
    repeat: usize,
) -> Value {
    common::submit_as(mm, acct, SENDER, to, body, repeat)
}

/// Submits one message and returns its queue id; panics unless it was accepted.
#[track_caller]
pub(crate) fn submit_one(mm: &Mailmux, acct: &TestTenant, to: &[&str], body: &[u8]) -> String {
    let report = submit(mm, acct, to, body, 1);
    assert_eq!(report["code"], 250, "submission refused: {report}");
    queue_id(report["text"].as_str().unwrap_or_default())
}

/// The queue id in "2.0.0 Ok: queued as <id>".
pub(crate) fn queue_id(reply: &str) -> String {
    assert!(reply.contains("queued as "), "not an acceptance: {reply}");
    reply.rsplit(' ').next().unwrap_or_default().to_string()
}

// ----------------------------------------------------------------------------------------------
// What the relay says about a message (the admin API), and waiting for it

/// `GET /api/tenants/{tenant}/messages/{id}`: recipients (status, attempts, last_reply) and
/// `history` (every attempt).
pub(crate) fn history(mm: &Mailmux, tenant: &str, id: &str) -> Value {
    let (status, body) = http(
        mm.admin(),
        "GET",
        &format!("/api/tenants/{tenant}/messages/{id}"),
        Some(common::ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 200, "message {id}: {body}");
    body
}

/// The one recipient of a message's history.
pub(crate) fn only_recipient(shown: &Value) -> &Value {
    let recipients = shown["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{shown}");
    &recipients[0]
}

/// Polls `f` every 100 ms until it returns `Ok`; after `timeout` panics with `what` and the
/// last `Err` (what was seen instead).
#[track_caller]
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            panic!("waited {timeout:?} for {what}; last seen: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the message's only recipient has `status` with a last reply containing each of
/// `needles`; returns the whole history.
#[track_caller]
pub(crate) fn wait_for_recipient(
    mm: &Mailmux,
    tenant: &str,
    id: &str,
    status: &str,
    needles: &[&str],
    timeout: Duration,
) -> Value {
    wait_for(
        &format!("message {id}: recipient {status} with {needles:?}"),
        timeout,
        || {
            let shown = history(mm, tenant, id);
            let r = only_recipient(&shown);
            let reply = r["last_reply"].as_str().unwrap_or_default();
            if r["status"] == status && needles.iter().all(|n| reply.contains(n)) {
                Ok(shown)
            } else {
                Err(shown.to_string())
            }
        },
    )
}

/// GET /healthz (no token): status code and body.
pub(crate) fn healthz(mm: &Mailmux) -> (u16, Value) {
    http(mm.admin(), "GET", "/healthz", None, None)
}

// ----------------------------------------------------------------------------------------------
// What the receiving side saw

/// One of the sink's counters (see smtp_sink.py: `messages`, `connections`, `data_received`,
/// `closed_after_dot`, ...); 0 before the sink first wrote them.
pub(crate) fn counter(sink: &Sink, name: &str) -> u64 {
    sink.counts()[name].as_u64().unwrap_or(0)
}

/// Sink arguments that log every DATA transaction (before any delay or decision) to
/// [`data_log_path`], plus `extra`.
pub(crate) fn sink_args<'a>(log: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--data-log", log.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    args
}

/// Where a test keeps a sink's DATA log: beside its own files, so a failing test keeps both.
pub(crate) fn data_log_path(dir: &common::TestDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.data.jsonl"))
}

/// The DATA transactions a sink logged: `{"n", "message_id", "helo", "peer", "rcpt_tos", "at"}`.
pub(crate) fn data_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line being appended may be cut short: skip what does not parse.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How many DATA transactions carried each Message-ID.
pub(crate) fn transactions_by_message_id(log: &[Value]) -> HashMap<String, usize> {
    let mut by_id = HashMap::new();
    for entry in log {
        if let Some(id) = entry["message_id"].as_str() {
            *by_id.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    by_id
}

/// Message-IDs of what a sink accepted, with the number of copies, read incrementally: the
/// crash tests deliver thousands of messages and poll this.
#[derive(Default)]
pub(crate) struct Delivered {
    pub(crate) read: HashSet<u64>,
    pub(crate) copies: HashMap<String, usize>,
}

impl Delivered {
    pub(crate) fn refresh(&mut self, sink: &Sink) -> &mut Self {
        let dir = sink.messages_dir();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return self;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            // The sink renames <seq>.json into place after <seq>.eml: a .json means complete.
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if self.read.contains(&seq) {
                continue;
            }
            let Ok(raw) = std::fs::read(dir.join(format!("{seq:06}.eml"))) else {
                continue;
            };
            self.read.insert(seq);
            if let Some(id) = common::header(&raw, "Message-ID") {
                *self.copies.entry(id).or_insert(0) += 1;
            }
        }
        self
    }

    pub(crate) fn contains(&self, id: &str) -> bool {
        self.copies.contains_key(id)
    }

    /// Messages accepted at the sink.
    pub(crate) fn total(&self) -> usize {
        self.read.len()
    }

    /// (Message-ID, copies) for every Message-ID that arrived more than once.
    pub(crate) fn duplicated(&self) -> Vec<(String, usize)> {
        let mut dups: Vec<_> = self
            .copies
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        dups.sort();
        dups
    }

    /// Extra copies over all Message-IDs (a message delivered three times counts two).
    pub(crate) fn extra_copies(&self) -> usize {
        self.copies.values().map(|n| n - 1).sum()
    }

    /// Which of `ids` have not arrived.
    pub(crate) fn missing<'a>(&self, ids: &'a [String]) -> Vec<&'a String> {
        ids.iter().filter(|id| !self.contains(id)).collect()
    }
}

/// Waits until every one of `acknowledged` arrived at the sink, then until the sink has been
/// quiet for `quiet` (late duplicates arrive too), within `timeout`. Returns what arrived.
pub(crate) fn wait_for_all(
    sink: &Sink,
    acknowledged: &[String],
    quiet: Duration,
    timeout: Duration,
) -> Delivered {
    let mut delivered = Delivered::default();
    let deadline = Instant::now() + timeout;
    let (mut last_total, mut since) = (usize::MAX, Instant::now());
    loop {
        delivered.refresh(sink);
        let all_there = delivered.missing(acknowledged).is_empty();
        if delivered.total() != last_total {
            (last_total, since) = (delivered.total(), Instant::now());
        }
        if (all_there && since.elapsed() >= quiet) || Instant::now() >= deadline {
            return delivered;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ----------------------------------------------------------------------------------------------
// A dead destination

/// A TCP listener standing in for a destination that is down: it accepts, counts the
/// connection, answers `421 4.3.2 down` and closes. Also a canary for addresses that must never
/// be connected to.
pub(crate) struct DeadDestination {
    pub(crate) connections: Arc<AtomicUsize>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
}

impl DeadDestination {
    pub(crate) fn start(addr: SocketAddr) -> DeadDestination {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind the dead listener {addr}: {e}"));
        // Non-blocking accept, so that the thread sees `stop`.
        listener.set_nonblocking(true).expect("non-blocking");
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, stop) = (Arc::clone(&connections), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.write_all(b"421 4.3.2 down\r\n");
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        DeadDestination {
            connections,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for DeadDestination {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Continuous load across restarts

/// 8-ish SMTP sessions submitting until stopped (tests/support/load_smtplib.py). They find the
/// relay through its listeners.json, so they follow it across restarts (each restart binds new
/// ports), and report every 250 the moment it arrives.
pub(crate) struct Load {
    pub(crate) child: Child,
    pub(crate) _stdin: Option<ChildStdin>,
    pub(crate) accepted: Arc<Mutex<Vec<String>>>,
    pub(crate) errors: Arc<AtomicUsize>,
    pub(crate) reader: Option<JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(mm: &Mailmux, acct: &TestTenant, to: &str, sessions: usize) -> Load {
        Load::start_sized(mm, acct, to, sessions, 2160)
    }

    /// [`Load::start`] with bodies of about `size` bytes.
    pub(crate) fn start_sized(
        mm: &Mailmux,
        acct: &TestTenant,
        to: &str,
        sessions: usize,
        size: usize,
    ) -> Load {
        let mut child = Command::new(common::python())
            .arg("-u")
            .arg(common::support_dir().join("load_smtplib.py"))
            .arg("--listeners-file")
            .arg(mm.listeners_file())
            .args(["--user", &acct.username, "--password", &acct.password])
            .args(["--from", SENDER, "--to", to])
            .args(["--sessions", &sessions.to_string()])
            .args(["--size", &size.to_string()])
            // Its stdin is ours: it stops when the test process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run load_smtplib.py: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (accepted, errors) = (Arc::clone(&accepted), Arc::clone(&errors));
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    match v["accepted"].as_str() {
                        Some(id) => lock(&accepted).push(id.to_string()),
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        Load {
            child,
            _stdin: stdin,
            accepted,
            errors,
            reader: Some(reader),
        }
    }

    pub(crate) fn accepted_count(&self) -> usize {
        lock(&self.accepted).len()
    }

    /// Waits until `n` more messages than now are acknowledged.
    #[track_caller]
    pub(crate) fn wait_for_more_accepted(&self, n: usize) {
        let target = self.accepted_count() + n;
        wait_for(
            &format!("{target} acknowledged messages"),
            Duration::from_secs(60),
            || match self.accepted_count() {
                count if count >= target => Ok(()),
                count => Err(format!("{count} acknowledged")),
            },
        );
    }

    /// Waits until the sessions noticed that the node went away (a connection lost).
    #[track_caller]
    pub(crate) fn wait_for_lost_connection(&self, before: usize) {
        wait_for(
            "a session to lose its connection",
            Duration::from_secs(30),
            || match self.errors.load(Ordering::Relaxed) {
                errors if errors > before => Ok(()),
                errors => Err(format!("{errors} connections lost")),
            },
        );
    }

    /// SIGTERM: sessions finish the transaction in flight (so every 250 is reported) and quit.
    /// Returns every acknowledged Message-ID and the number of lost connections.
    pub(crate) fn stop(mut self) -> (Vec<String>, usize) {
        let status = common::terminate(&mut self.child, Duration::from_secs(30));
        assert!(status.success(), "load_smtplib.py: {status}");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let accepted = lock(&self.accepted).clone();
        (accepted, self.errors.load(Ordering::Relaxed))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------------------------------
// Postgres

/// (`postgres://…/postgres`, database name) for a test database URL: where to run the
/// statements that take the database away from its users.
pub(crate) fn admin_db(url: &str) -> (String, String) {
    let (base, name) = url.rsplit_once('/').expect("a database URL");
    (format!("{base}/postgres"), name.to_string())
}

/// Messages some node still holds a lease on.
pub(crate) fn leases_held(url: &str) -> u64 {
    common::psql(
        url,
        "SELECT count(*) FROM messages WHERE lease_owner IS NOT NULL",
    )
    .parse()
    .expect("a count")
}

// ==============================================================================================
// 1. Leases that hold

// ==============================================================================================
// 6. Never aimed inward
