//! End to end, issue 9: delivery under faults. The real mailmux binary (one node on SQLite, or
//! several on one Postgres), a real receiving SMTP server in another process that misbehaves on
//! purpose (slow, or closing after the final dot), a dead destination that answers 421, a real
//! DNS server whose answers aim at private and metadata addresses, `kill -9`, SIGTERM and a
//! database that goes away.
//!
//! What a user of the relay would check, each in its own test:
//! - a remote slower than the lease gets the message once, also with two nodes;
//! - a node that dies for good has its acknowledged mail delivered by the other node;
//! - a lost reply to the final dot defers ("outcome unknown") instead of re-sending;
//! - a dead destination costs a bounded number of connections and does not hold up others;
//! - six `kill -9` cycles under load lose nothing and rarely duplicate;
//! - a database that disappears turns `/healthz` 503 and SMTP 4xx, and nothing 250'd is lost;
//! - MX answers pointing inward (10/8, 169.254.169.254, loopback unless allowed) bounce with
//!   5.4.4 without a connection; a message that went round too many hops bounces with 5.4.6;
//! - SIGTERM lets the delivery in flight finish, exits 0 and leaves no lease behind.
//!
//! Nothing here connects outside 127.0.0.0/8: 10.0.0.1 and 169.254.169.254 exist only as DNS
//! answers, and that test first proves with a loopback canary that refused addresses are not
//! connected to before it publishes them.
#![allow(clippy::disallowed_methods)] // synchronous tests driving real processes: no runtime here for std::thread::sleep to block

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{DnsServer, Mailmux, Sink, TestTenant, http};
use mailmux_core::sync::lock;
use serde_json::{Value, json};

// ----------------------------------------------------------------------------------------------
// Set-up: DNS, relay nodes, the sending tenant

/// The sending tenant's domain; its MX is the sink too, so DSNs to the sender arrive there.
const SENDER_DOMAIN: &str = "acme.test";
const SENDER: &str = "app@acme.test";

/// DNS: sink.test and acme.test have their MX on 127.0.0.1 (where the sink listens), plus
/// `extra` records.
fn dns(extra: &[Value]) -> DnsServer {
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
fn node(dns: &DnsServer, mx_port: u16, extra: &[(&str, &str)], db: Option<&str>) -> Mailmux {
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
fn sender(mm: &Mailmux) -> TestTenant {
    mm.setup_tenant("acme", "enterprise", SENDER_DOMAIN)
}

/// Gives node `to` the master key of node `from` (the key that seals the DKIM keys in the
/// shared database; created by the CLI on `from` with the first domain), as an operator copies
/// it to every node, and restarts `to` so that it starts with it.
fn share_master_key(from: &Mailmux, to: &mut Mailmux) {
    let key = from.data_dir().join("master.key");
    std::fs::copy(&key, to.data_dir().join("master.key"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", key.display()));
    to.restart();
}

/// A small message whose Message-ID is `<{tag}@acme.test>`.
fn message(tag: &str, to: &str) -> Vec<u8> {
    format!(
        "From: App <{SENDER}>\r\nTo: <{to}>\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@{SENDER_DOMAIN}>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n\
         hello from {tag}\r\n"
    )
    .into_bytes()
}

/// Submits from [`SENDER`] (see [`common::submit_as`]).
fn submit(mm: &Mailmux, acct: &TestTenant, to: &[&str], body: &[u8], repeat: usize) -> Value {
    common::submit_as(mm, acct, SENDER, to, body, repeat)
}

/// Submits one message and returns its queue id; panics unless it was accepted.
#[track_caller]
fn submit_one(mm: &Mailmux, acct: &TestTenant, to: &[&str], body: &[u8]) -> String {
    let report = submit(mm, acct, to, body, 1);
    assert_eq!(report["code"], 250, "submission refused: {report}");
    queue_id(report["text"].as_str().unwrap_or_default())
}

/// The queue id in "2.0.0 Ok: queued as <id>".
fn queue_id(reply: &str) -> String {
    assert!(reply.contains("queued as "), "not an acceptance: {reply}");
    reply.rsplit(' ').next().unwrap_or_default().to_string()
}

// ----------------------------------------------------------------------------------------------
// What the relay says about a message (the admin API), and waiting for it

/// `GET /api/tenants/{tenant}/messages/{id}`: recipients (status, attempts, last_reply) and
/// `history` (every attempt).
fn history(mm: &Mailmux, tenant: &str, id: &str) -> Value {
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
fn only_recipient(shown: &Value) -> &Value {
    let recipients = shown["recipients"].as_array().expect("recipients");
    assert_eq!(recipients.len(), 1, "{shown}");
    &recipients[0]
}

/// Polls `f` every 100 ms until it returns `Ok`; after `timeout` panics with `what` and the
/// last `Err` (what was seen instead).
#[track_caller]
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
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
fn wait_for_recipient(
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
fn healthz(mm: &Mailmux) -> (u16, Value) {
    http(mm.admin(), "GET", "/healthz", None, None)
}

// ----------------------------------------------------------------------------------------------
// What the receiving side saw

/// One of the sink's counters (see smtp_sink.py: `messages`, `connections`, `data_received`,
/// `closed_after_dot`, ...); 0 before the sink first wrote them.
fn counter(sink: &Sink, name: &str) -> u64 {
    sink.counts()[name].as_u64().unwrap_or(0)
}

/// Sink arguments that log every DATA transaction (before any delay or decision) to
/// [`data_log_path`], plus `extra`.
fn sink_args<'a>(log: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--data-log", log.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    args
}

/// Where a test keeps a sink's DATA log: beside its own files, so a failing test keeps both.
fn data_log_path(dir: &common::TestDir, name: &str) -> PathBuf {
    dir.path().join(format!("{name}.data.jsonl"))
}

/// The DATA transactions a sink logged: `{"n", "message_id", "helo", "peer", "rcpt_tos", "at"}`.
fn data_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // A line being appended may be cut short: skip what does not parse.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How many DATA transactions carried each Message-ID.
fn transactions_by_message_id(log: &[Value]) -> HashMap<String, usize> {
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
struct Delivered {
    read: HashSet<u64>,
    copies: HashMap<String, usize>,
}

impl Delivered {
    fn refresh(&mut self, sink: &Sink) -> &mut Self {
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

    fn contains(&self, id: &str) -> bool {
        self.copies.contains_key(id)
    }

    /// Messages accepted at the sink.
    fn total(&self) -> usize {
        self.read.len()
    }

    /// (Message-ID, copies) for every Message-ID that arrived more than once.
    fn duplicated(&self) -> Vec<(String, usize)> {
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
    fn extra_copies(&self) -> usize {
        self.copies.values().map(|n| n - 1).sum()
    }

    /// Which of `ids` have not arrived.
    fn missing<'a>(&self, ids: &'a [String]) -> Vec<&'a String> {
        ids.iter().filter(|id| !self.contains(id)).collect()
    }
}

/// Waits until every one of `acknowledged` arrived at the sink, then until the sink has been
/// quiet for `quiet` (late duplicates arrive too), within `timeout`. Returns what arrived.
fn wait_for_all(
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
struct DeadDestination {
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DeadDestination {
    fn start(addr: SocketAddr) -> DeadDestination {
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

    fn connections(&self) -> usize {
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
struct Load {
    child: Child,
    _stdin: Option<ChildStdin>,
    accepted: Arc<Mutex<Vec<String>>>,
    errors: Arc<AtomicUsize>,
    reader: Option<JoinHandle<()>>,
}

impl Load {
    fn start(mm: &Mailmux, acct: &TestTenant, to: &str, sessions: usize) -> Load {
        let mut child = Command::new(common::python())
            .arg("-u")
            .arg(common::support_dir().join("load_smtplib.py"))
            .arg("--listeners-file")
            .arg(mm.listeners_file())
            .args(["--user", &acct.username, "--password", &acct.password])
            .args(["--from", SENDER, "--to", to])
            .args(["--sessions", &sessions.to_string()])
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

    fn accepted_count(&self) -> usize {
        lock(&self.accepted).len()
    }

    /// SIGTERM: sessions finish the transaction in flight (so every 250 is reported) and quit.
    /// Returns every acknowledged Message-ID and the number of lost connections.
    fn stop(mut self) -> (Vec<String>, usize) {
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
fn admin_db(url: &str) -> (String, String) {
    let (base, name) = url.rsplit_once('/').expect("a database URL");
    (format!("{base}/postgres"), name.to_string())
}

/// Messages some node still holds a lease on.
fn leases_held(url: &str) -> u64 {
    common::psql(
        url,
        "SELECT count(*) FROM messages WHERE lease_owner IS NOT NULL",
    )
    .parse()
    .expect("a count")
}

// ==============================================================================================
// 1. Leases that hold

/// A remote that takes 7 s to answer the final dot, far longer than the 2 s lease: the lease
/// is renewed while the attempt runs, so the message is not claimed again and arrives once,
/// with one attempt on record. Then the same with two nodes sharing one Postgres database, where
/// the other node is the one that would claim it.
#[test]
fn slow_end_of_data_longer_than_the_lease_is_delivered_once() {
    if !common::require_support() {
        return;
    }
    let lease = [
        ("MAILMUX_QUEUE__LEASE_SECS", "2"),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS", "200"),
    ];
    let dns = dns(&[]);
    let dir = common::TestDir::new("mailmux-faults-lease");

    // One node, SQLite.
    let log = data_log_path(&dir, "single");
    let sink = Sink::start(&sink_args(&log, &["--delay-ms", "7000"]));
    let mm = node(&dns, sink.port(), &lease, None);
    let acct = sender(&mm);
    let id = submit_one(
        &mm,
        &acct,
        &["slow@sink.test"],
        &message("slow-single", "slow@sink.test"),
    );
    assert_delivered_once(&[&mm], &acct, &id, &sink, &log);

    // Two nodes, one Postgres.
    let Some(url) = common::postgres_url() else {
        return;
    };
    let log = data_log_path(&dir, "two-nodes");
    let sink = Sink::start(&sink_args(&log, &["--delay-ms", "7000"]));
    let a = node(&dns, sink.port(), &lease, Some(&url));
    let mut b = node(&dns, sink.port(), &lease, Some(&url));
    let acct = sender(&a);
    share_master_key(&a, &mut b);
    let id = submit_one(
        &a,
        &acct,
        &["slow@sink.test"],
        &message("slow-two", "slow@sink.test"),
    );
    assert_delivered_once(&[&a, &b], &acct, &id, &sink, &log);
}

/// The message `id` arrives at `sink` once: one DATA transaction, also for a while after the
/// delivery was recorded (more than two leases), and one attempt, delivered, in its history on
/// every node.
#[track_caller]
fn assert_delivered_once(nodes: &[&Mailmux], acct: &TestTenant, id: &str, sink: &Sink, log: &Path) {
    sink.wait_for_messages(1, Duration::from_secs(30));
    wait_for_recipient(
        nodes[0],
        &acct.id,
        id,
        "delivered",
        &[],
        Duration::from_secs(15),
    );
    // A second claim would show as a second DATA transaction the moment its dot arrives; the
    // 7 s reply delay does not hide it. Three leases after the report is plenty.
    let second = common::wait_until(Duration::from_secs(6), || {
        (counter(sink, "data_received") >= 2).then_some(())
    });
    assert!(
        second.is_none(),
        "a second DATA transaction for one message: {:?}",
        data_log(log)
    );
    assert_eq!(sink.messages().len(), 1, "delivered once");
    for node in nodes {
        let shown = history(node, &acct.id, id);
        let r = only_recipient(&shown);
        assert_eq!(r["status"], "delivered", "{shown}");
        assert_eq!(r["attempts"], 1, "one attempt: {shown}");
        let attempts = shown["history"].as_array().expect("history");
        assert_eq!(attempts.len(), 1, "one report recorded: {shown}");
        assert_eq!(attempts[0]["outcome"], "delivered", "{shown}");
    }
}

/// Two nodes on one Postgres; node A accepts a burst while its deliveries are slowed down (the
/// remote takes 300 ms per message), and is killed with `kill -9` after about 30
/// acknowledgements, for good. Node B delivers everything A acknowledged within about one lease
/// (3 s) plus a margin. A message may arrive twice only if A had sent its final dot (A's copy
/// is then in the sink's DATA log, under A's EHLO name); nothing else twice.
#[test]
fn a_dead_node_s_mail_is_taken_over_by_the_other() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let dns = dns(&[]);
    let dir = common::TestDir::new("mailmux-faults-takeover");
    let log = data_log_path(&dir, "sink");
    let sink = Sink::start(&sink_args(&log, &["--delay-ms", "300"]));
    // Each node greets the remote with its own name: the sink's DATA log says who sent what.
    let env = |helo: &'static str| {
        [
            ("MAILMUX_QUEUE__LEASE_SECS", "3"),
            ("MAILMUX_DELIVERY__HELO_NAME", helo),
        ]
    };
    let mut a = node(&dns, sink.port(), &env("node-a.test"), Some(&url));
    let mut b = node(&dns, sink.port(), &env("node-b.test"), Some(&url));
    let acct = sender(&a);
    share_master_key(&a, &mut b);

    let mut burst = common::smtplib_burst(
        a.submission(),
        &acct.username,
        &acct.password,
        SENDER,
        "user@sink.test",
        4,
        25,
    );
    burst.wait_for_accepted(30, Duration::from_secs(60));
    a.kill9();
    let killed = Instant::now();
    let acknowledged = burst.finish();
    assert!(
        acknowledged.len() < 100,
        "the kill came too late to test anything ({} acknowledged)",
        acknowledged.len()
    );

    // Within about one lease (3 s) plus the time to deliver the rest at 300 ms each over a few
    // connections; then a quiet moment, for late duplicates to show.
    wait_for_all(
        &sink,
        &acknowledged,
        Duration::ZERO,
        Duration::from_secs(20),
    );
    let taken_over_in = killed.elapsed();
    let delivered = wait_for_all(
        &sink,
        &acknowledged,
        Duration::from_secs(2),
        Duration::from_secs(5),
    );
    let lost = delivered.missing(&acknowledged);

    let sent_by_a: HashSet<String> = data_log(&log)
        .iter()
        .filter(|e| e["helo"] == "node-a.test")
        .filter_map(|e| e["message_id"].as_str().map(str::to_string))
        .collect();
    let duplicated = delivered.duplicated();
    let (after_a_s_dot, unexplained): (Vec<_>, Vec<_>) = duplicated
        .iter()
        .partition(|(id, _)| sent_by_a.contains(id));
    println!(
        "dead node: acknowledged={} delivered={} lost={} duplicated={} (after A's final dot: \
         {}, otherwise: {}) in {taken_over_in:?}; A had sent {} final dots",
        acknowledged.len(),
        delivered.total(),
        lost.len(),
        duplicated.len(),
        after_a_s_dot.len(),
        unexplained.len(),
        sent_by_a.len(),
    );
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages not delivered within 20 s of the kill: {lost:?}",
        lost.len(),
        acknowledged.len()
    );
    assert!(
        unexplained.is_empty(),
        "delivered twice although node A never sent them: {unexplained:?}"
    );
}

// ==============================================================================================
// 2. No resend after the final dot

/// The remote reads the whole message and closes the connection without answering the final
/// dot: it may or may not have taken the message. The recipient is deferred with "outcome
/// unknown" to the normal retry schedule (30 s here, so no retry falls inside the test), and
/// the message is not sent again at once: neither on another connection to the same host nor
/// to the domain's next MX host (a second sink on 127.0.0.2, which would accept it).
#[test]
fn reply_lost_after_the_dot_defers_without_resending() {
    if !common::require_support() {
        return;
    }
    let dir = common::TestDir::new("mailmux-faults-dot");
    let (log1, log2) = (data_log_path(&dir, "mx1"), data_log_path(&dir, "mx2"));
    // Every transaction on the first host loses its reply.
    let first = Sink::start(&sink_args(&log1, &["--close-after-dot", "1000"]));
    let port = first.port().to_string();
    // The next MX host: same port (the MX port is global), another loopback address.
    let second = Sink::start(&sink_args(
        &log2,
        &["--address", "127.0.0.2", "--port", &port],
    ));
    let dns = dns(&[
        json!({"name": "one.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "two.test", "type": "MX", "value": "10 mx1.two.test"}),
        json!({"name": "two.test", "type": "MX", "value": "20 mx2.two.test"}),
        json!({"name": "mx1.two.test", "type": "A", "value": "127.0.0.1"}),
        json!({"name": "mx2.two.test", "type": "A", "value": "127.0.0.2"}),
    ]);
    let mm = node(
        &dns,
        first.port(),
        &[("MAILMUX_DELIVERY__RETRY_INITIAL_SECS", "30")],
        None,
    );
    let acct = sender(&mm);

    let one = submit_one(
        &mm,
        &acct,
        &["u@one.test"],
        &message("dot-one", "u@one.test"),
    );
    let two = submit_one(
        &mm,
        &acct,
        &["u@two.test"],
        &message("dot-two", "u@two.test"),
    );
    for id in [&one, &two] {
        let shown = wait_for_recipient(
            &mm,
            &acct.id,
            id,
            "deferred",
            &["outcome unknown"],
            Duration::from_secs(30),
        );
        assert_eq!(only_recipient(&shown)["attempts"], 1, "{shown}");
    }

    // An immediate re-send would come within moments; the retry is ≥ 24 s away (30 s − 20 %).
    let resent = common::wait_until(Duration::from_secs(5), || {
        (counter(&first, "data_received") + counter(&second, "data_received") > 2).then_some(())
    });
    let log: Vec<Value> = data_log(&log1).into_iter().chain(data_log(&log2)).collect();
    assert!(resent.is_none(), "sent again at once: {log:#?}");
    let by_id = transactions_by_message_id(&log);
    for tag in ["dot-one", "dot-two"] {
        let mid = format!("<{tag}@{SENDER_DOMAIN}>");
        assert_eq!(
            by_id.get(&mid),
            Some(&1),
            "one transaction for {mid}: {log:#?}"
        );
    }
    assert_eq!(
        counter(&second, "data_received"),
        0,
        "the next MX host got a copy"
    );
    assert_eq!(
        first.messages().len() + second.messages().len(),
        0,
        "no copy kept"
    );
}

// ==============================================================================================
// 3. Backoff that remembers

/// A dead destination (dead.test's MX, on 127.0.0.2, answers 421 to every connection) with 200
/// messages queued for it, retrying every second: it is marked down for 60 s after the first
/// failures, so it sees at most one connection per pool slot plus a few in 10 s, its messages
/// are deferred without connecting, and mail for a healthy destination goes out meanwhile.
#[test]
fn a_dead_destination_costs_bounded_connections() {
    if !common::require_support() {
        return;
    }
    let sink = Sink::start(&[]);
    let dead = DeadDestination::start(SocketAddr::from(([127, 0, 0, 2], sink.port())));
    let dns = dns(&[
        json!({"name": "dead.test", "type": "MX", "value": "10 mx.dead.test"}),
        json!({"name": "mx.dead.test", "type": "A", "value": "127.0.0.2"}),
        json!({"name": "healthy.test", "type": "MX", "value": "10 mx.sink.test"}),
    ]);
    let mm = node(
        &dns,
        sink.port(),
        &[
            ("MAILMUX_DELIVERY__HOST_DOWN_SECS", "60"),
            ("MAILMUX_DELIVERY__MAX_CONNECTIONS_PER_DESTINATION", "8"),
        ],
        None,
    );
    let acct = sender(&mm);

    let started = Instant::now();
    let dead_ids: Vec<String> = std::thread::scope(|scope| {
        // 200 for the dead destination on one session, while...
        let dead_submission = scope.spawn(|| {
            submit(
                &mm,
                &acct,
                &["u@dead.test"],
                &message("dead", "u@dead.test"),
                200,
            )
        });
        // ...once the dead destination is failing, healthy mail goes out meanwhile.
        wait_for(
            "a first connection to the dead destination",
            Duration::from_secs(15),
            || match dead.connections() {
                0 => Err("none".into()),
                _ => Ok(()),
            },
        );
        let healthy_at = Instant::now();
        let report = submit(
            &mm,
            &acct,
            &["u@healthy.test"],
            &message("healthy", "u@healthy.test"),
            5,
        );
        assert_eq!(report["ok"], true, "{report}");
        sink.wait_for_messages(5, Duration::from_secs(15));
        println!(
            "healthy destination: 5 delivered in {:?}",
            healthy_at.elapsed()
        );
        let report = dead_submission.join().expect("dead.test submission");
        assert_eq!(report["ok"], true, "{report}");
        report["replies"]
            .as_array()
            .expect("replies")
            .iter()
            .map(|r| queue_id(r[1].as_str().unwrap_or_default()))
            .collect()
    });
    assert_eq!(dead_ids.len(), 200);

    // Every dead.test message is attempted and deferred, most without a connection.
    let deferred = wait_for("200 deferred messages", Duration::from_secs(30), || {
        let (status, body) = http(
            mm.admin(),
            "GET",
            &format!(
                "/api/tenants/{}/messages?status=deferred&limit=500",
                acct.id
            ),
            Some(common::ADMIN_TOKEN),
            None,
        );
        let list = body["messages"].as_array().cloned().unwrap_or_default();
        let ids: HashSet<&str> = list.iter().filter_map(|m| m["id"].as_str()).collect();
        let all = dead_ids.iter().all(|id| ids.contains(id.as_str()));
        if status == 200 && all {
            Ok(list)
        } else {
            Err(format!("{status}: {} deferred", list.len()))
        }
    });
    for m in &deferred {
        let reply = m["recipients"][0]["last_reply"]
            .as_str()
            .unwrap_or_default();
        assert!(
            reply.contains("marked down") || reply.contains("421"),
            "deferred for another reason: {m}"
        );
    }
    let marked_down = deferred
        .iter()
        .filter(|m| {
            m["recipients"][0]["last_reply"]
                .as_str()
                .is_some_and(|r| r.contains("marked down"))
        })
        .count();

    // Count over at least 10 s of a queue that is due every second.
    if let Some(rest) = Duration::from_secs(10).checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let connections = dead.connections();
    println!(
        "dead destination: {connections} connections in {:?}; {marked_down} of 200 deferred as \
         marked down",
        started.elapsed()
    );
    assert!(connections >= 1, "the dead destination was never tried");
    assert!(
        connections <= 16,
        "{connections} connections to a destination that answers 421 (at most 8 + a few)"
    );
    assert!(marked_down > 0, "no message deferred as 'marked down'");

    // While it is down (60 s from its first failure, ~50 s still to go), none of its messages
    // is due: they wait for the destination instead of each spending an attempt.
    let (status, body) = http(
        mm.admin(),
        "GET",
        &format!(
            "/api/tenants/{}/messages?status=deferred&limit=500",
            acct.id
        ),
        Some(common::ADMIN_TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let due_early: Vec<&Value> = body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["next_attempt_at"].as_i64().unwrap_or(0) < now_ms + 30_000)
        .collect();
    assert!(
        due_early.is_empty(),
        "{} dead.test messages due before the destination's down period ends, e.g. {}",
        due_early.len(),
        due_early[0]
    );
}

// ==============================================================================================
// 4. Fewer duplicates after a crash

/// One node on SQLite, 8 sessions submitting continuously, six cycles of: run 4.5 s, `kill -9`,
/// restart 0.7 s later. Every acknowledged message is delivered. A message the remote took
/// just before a kill, before its 250 was journaled, is delivered again: that rate is measured
/// and printed (the target is 0.1 %; the bound asserted here leaves room for a machine shared
/// with the other tests, which slows the journal's fsync), and the restarts must have recorded
/// journaled deliveries instead of sending them again.
#[test]
fn crash_cycles_lose_nothing_and_rarely_duplicate() {
    if !common::require_support() {
        return;
    }
    let dns = dns(&[]);
    let sink = Sink::start(&[]);
    let mut mm = node(&dns, sink.port(), &[], None);
    let acct = sender(&mm);

    let load = Load::start(&mm, &acct, "user@sink.test", 8);
    for cycle in 1..=6 {
        std::thread::sleep(Duration::from_millis(4500));
        mm.kill9();
        println!(
            "crash cycle {cycle}: killed at {} acknowledged",
            load.accepted_count()
        );
        std::thread::sleep(Duration::from_millis(700));
        mm.restart();
    }
    // Let the sessions reconnect and submit to the last incarnation too.
    std::thread::sleep(Duration::from_millis(1500));
    let (acknowledged, lost_connections) = load.stop();
    assert!(
        acknowledged.len() >= 100,
        "too little load to measure anything: {} acknowledged",
        acknowledged.len()
    );

    let delivered = wait_for_all(
        &sink,
        &acknowledged,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    let lost = delivered.missing(&acknowledged);
    let duplicated = delivered.extra_copies();
    let rate = duplicated as f64 / acknowledged.len() as f64;
    println!(
        "crash cycles: acknowledged={} lost={} duplicated={duplicated} rate={:.3}% \
         (delivered={}, sessions cut by the kills={lost_connections})",
        acknowledged.len(),
        lost.len(),
        rate * 100.0,
        delivered.total(),
    );
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        rate <= 0.003,
        "duplicate rate {:.3}% over 0.3 %: {:?}",
        rate * 100.0,
        &delivered.duplicated()[..delivered.duplicated().len().min(20)]
    );
    let log = mm.log();
    let recovered: u64 = log
        .lines()
        .filter(|line| line.contains("recorded deliveries journaled before the restart"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("recorded=")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    println!("crash cycles: deliveries recorded from the journal at restarts: {recovered}");
    assert!(
        recovered > 0,
        "no restart recorded a journaled delivery: each kill must have caught some"
    );
}

// ==============================================================================================
// 5. Supervised, and honest about it

/// An SMTP transaction that gets as far as RCPT now and sends its DATA later, when told: a
/// client in the middle of a transaction when something goes wrong.
struct HeldSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Logs in, MAIL, RCPT, prints `{"ready": true}` (or the refusal), waits for a line on stdin,
/// then DATA, and prints `{"stage", "code", "text"}` of its final reply.
const HELD_SESSION_PY: &str = r#"
import json, smtplib, ssl, sys
host, port, user, pw, sender, rcpt, tag = sys.argv[1:8]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(host, int(port), timeout=60); s.starttls(context=ctx); s.login(user, pw)
mail, rcpt_reply = s.mail(sender), s.rcpt(rcpt)
print(json.dumps({"ready": mail[0] == 250 and rcpt_reply[0] == 250,
                  "mail": mail[0], "rcpt": rcpt_reply[0]}), flush=True)
sys.stdin.readline()
body = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {tag}\r\n"
        f"Message-ID: <{tag}@{sender.split('@')[1]}>\r\n\r\nhello\r\n").encode()
out = {"stage": "data"}
try:
    code, msg = s.data(body)
    out["code"], out["text"] = code, msg.decode("utf-8", "replace")
except smtplib.SMTPResponseException as e:
    out["code"], out["text"] = e.smtp_code, e.smtp_error.decode("utf-8", "replace")
except (OSError, smtplib.SMTPException) as e:
    out["code"], out["text"] = None, repr(e)
print(json.dumps(out), flush=True)
"#;

impl HeldSession {
    fn open(mm: &Mailmux, acct: &TestTenant, rcpt: &str, tag: &str) -> HeldSession {
        use std::io::BufRead;
        let addr = mm.submission();
        let mut child = Command::new(common::python())
            .arg("-c")
            .arg(HELD_SESSION_PY)
            .args([&addr.ip().to_string(), &addr.port().to_string()])
            .args([&acct.username, &acct.password, SENDER, rcpt, tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run the held session: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        assert!(
            line.contains("\"ready\": true"),
            "the held transaction did not get past RCPT: {line:?}"
        );
        HeldSession {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends the message now; the session's report.
    fn send(&mut self) -> Value {
        use std::io::BufRead;
        let mut stdin = self.stdin.take().expect("send once");
        stdin
            .write_all(b"go\n")
            .expect("tell the held session to send");
        drop(stdin);
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("held session printed no report ({e}): {line:?}"))
    }
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// On Postgres: the database refuses connections and its sessions are cut. `/healthz` turns
/// 503, degraded, with the database failed; a new session is refused with 4xx, and a session
/// that authenticated before the loss gets 451 at the end of DATA (the queue writer cannot make
/// the message durable, and says so in `/healthz`): never 250. When the database comes back,
/// health returns to 200 within seconds, new mail is accepted and delivered, and every message
/// that got a 250 arrives.
#[test]
fn database_loss_degrades_health_and_answers_4xx() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let (admin, db) = admin_db(&url);
    let dns = dns(&[]);
    let sink = Sink::start(&[]);
    let mm = node(&dns, sink.port(), &[], Some(&url));
    let acct = sender(&mm);
    let mut acknowledged = vec![format!("<db-before@{SENDER_DOMAIN}>")];
    submit_one(
        &mm,
        &acct,
        &["u@sink.test"],
        &message("db-before", "u@sink.test"),
    );
    sink.wait_for_messages(1, Duration::from_secs(30));
    let (status, health) = healthz(&mm);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["components"]["database"]["status"], "ok", "{health}");

    // A client in the middle of a transaction (RCPT accepted) when the database goes away.
    let mut held = HeldSession::open(&mm, &acct, "u@sink.test", "db-held");

    // The database goes away: no new connections, the existing ones cut.
    common::psql(
        &admin,
        &format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false"),
    );
    common::psql(
        &admin,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ),
    );
    let lost_at = Instant::now();
    let health = wait_for(
        "healthz 503, database failed",
        Duration::from_secs(30),
        || {
            let (status, health) = healthz(&mm);
            if status == 503
                && health["status"] == "degraded"
                && health["components"]["database"]["status"] == "failed"
            {
                Ok(health)
            } else {
                Err(format!("{status} {health}"))
            }
        },
    );
    println!(
        "database gone: healthz degraded after {:?}: {health}",
        lost_at.elapsed()
    );

    // A new session: refused with 4xx wherever the relay first needs the database (AUTH).
    let asked = Instant::now();
    let report = submit(
        &mm,
        &acct,
        &["u@sink.test"],
        &message("db-during", "u@sink.test"),
        1,
    );
    println!(
        "new session while the database is gone ({:?}): {report}",
        asked.elapsed()
    );
    if report["code"] == 250 {
        // Must not happen; if it did, it must not be lost either.
        acknowledged.push(format!("<db-during@{SENDER_DOMAIN}>"));
    }
    let code = report["code"].as_u64().unwrap_or(0);
    assert!(
        (400..500).contains(&code),
        "a new session is refused with 4xx while the database is gone: {report}"
    );

    // The transaction in progress cannot be made durable: 451 at the end of DATA.
    let asked = Instant::now();
    let report = held.send();
    println!(
        "transaction in progress while the database is gone ({:?}): {report}",
        asked.elapsed()
    );
    if report["code"] == 250 {
        // Must not happen; if it did, it must not be lost either.
        acknowledged.push(format!("<db-held@{SENDER_DOMAIN}>"));
    }
    let text = report["text"].as_str().unwrap_or_default();
    assert!(
        report["code"] == 451 && text.starts_with("4.3.0"),
        "a message that cannot be made durable gets 451 4.3.0 at the end of DATA: {report}"
    );
    // (The queue writer is not marked failed here: it reports a commit that failed, and this
    // message was refused by the end-of-data checks, which need the database first.)

    // The database comes back.
    common::psql(
        &admin,
        &format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"),
    );
    let back_at = Instant::now();
    wait_for("healthz 200 again", Duration::from_secs(20), || {
        let (status, health) = healthz(&mm);
        if status == 200 && health["status"] == "ok" {
            Ok(())
        } else {
            Err(format!("{status} {health}"))
        }
    });
    println!("database back: healthz ok after {:?}", back_at.elapsed());
    submit_one(
        &mm,
        &acct,
        &["u@sink.test"],
        &message("db-after", "u@sink.test"),
    );
    acknowledged.push(format!("<db-after@{SENDER_DOMAIN}>"));
    let delivered = wait_for_all(
        &sink,
        &acknowledged,
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    let lost = delivered.missing(&acknowledged);
    assert!(lost.is_empty(), "acknowledged but not delivered: {lost:?}");
}

/// SIGTERM while a delivery is in flight (the remote takes 3 s to answer the final dot): the
/// listeners stop taking sessions, the delivery finishes within the grace period, the process
/// exits 0 and leaves no lease in the database; after a restart nothing is sent again.
#[test]
fn sigterm_finishes_deliveries_in_flight_and_releases_leases() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let dns = dns(&[]);
    let sink = Sink::start(&["--delay-ms", "3000"]);
    let mut mm = node(&dns, sink.port(), &[], Some(&url));
    let acct = sender(&mm);
    let id = submit_one(
        &mm,
        &acct,
        &["u@sink.test"],
        &message("sigterm", "u@sink.test"),
    );
    // The final dot has arrived; the reply is 3 s away.
    wait_for(
        "the DATA transaction at the sink",
        Duration::from_secs(20),
        || match counter(&sink, "data_received") {
            0 => Err(sink.counts().to_string()),
            _ => Ok(()),
        },
    );
    let submission = mm.submission();
    let pid = mm.pid().expect("running");
    let signalled = Instant::now();
    // The harness's terminate sends SIGTERM and waits; it runs beside the listener probe.
    let stopping = std::thread::spawn(move || {
        let status = mm.terminate(Duration::from_secs(20));
        (mm, status, signalled.elapsed())
    });
    wait_for(
        "the listeners to stop taking sessions",
        Duration::from_secs(5),
        || {
            if serves_a_session(submission) {
                Err(format!("{submission} still greets new clients (pid {pid})"))
            } else {
                Ok(())
            }
        },
    );
    let (mut mm, status, took) = stopping.join().expect("terminate");
    let status = status.expect("was running");
    println!("sigterm: exited {status} after {took:?}");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(15), "took {took:?} to stop");
    assert_eq!(sink.messages().len(), 1, "the delivery in flight finished");
    assert_eq!(leases_held(&url), 0, "leases left behind after SIGTERM");

    // Recorded as delivered: a restart sends nothing again.
    mm.restart();
    let again = common::wait_until(Duration::from_secs(4), || {
        (counter(&sink, "data_received") >= 2).then_some(())
    });
    assert!(again.is_none(), "delivered again after the restart");
    let shown = history(&mm, &acct.id, &id);
    let r = only_recipient(&shown);
    assert_eq!(r["status"], "delivered", "{shown}");
    assert_eq!(r["attempts"], 1, "{shown}");
}

/// Whether a new client at `addr` gets an SMTP greeting (within 1 s).
fn serves_a_session(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if n >= 3 && buf.starts_with(b"220"))
}

// ==============================================================================================
// 6. Never aimed inward

/// MX answers that point into the operator's network: inward.test's MX host has 10.0.0.1,
/// meta.test has no MX and the cloud metadata address as its A record. With only loopback
/// allowed (127.0.0.1/32 here, so that 127.0.0.3 can serve as a canary), both recipients
/// bounce with 5.4.4 naming the address, and the sender gets a DSN.
///
/// Before publishing those answers the test proves, with a listener on the refused loopback
/// address 127.0.0.3, that a refused address is bounced without a connection: a relay that
/// would connect is stopped there, before it could send anything off loopback.
#[test]
fn private_and_metadata_mx_addresses_are_refused() {
    if !common::require_support() {
        return;
    }
    let sink = Sink::start(&[]);
    let canary = DeadDestination::start(SocketAddr::from(([127, 0, 0, 3], sink.port())));
    let canary_records = [
        json!({"name": "canary.test", "type": "MX", "value": "10 mx.canary.test"}),
        json!({"name": "mx.canary.test", "type": "A", "value": "127.0.0.3"}),
    ];
    let dns = dns(&canary_records);
    let mm = node(
        &dns,
        sink.port(),
        &[("MAILMUX_DELIVERY__ALLOWED_NETWORKS", "[\"127.0.0.1/32\"]")],
        None,
    );
    let acct = sender(&mm);

    let id = submit_one(
        &mm,
        &acct,
        &["u@canary.test"],
        &message("canary", "u@canary.test"),
    );
    let shown = wait_for_recipient(
        &mm,
        &acct.id,
        &id,
        "bounced",
        &["5.4.4", "127.0.0.3"],
        Duration::from_secs(20),
    );
    assert_refused_address(&shown, "127.0.0.3");
    assert_eq!(
        canary.connections(),
        0,
        "connected to a refused address: {shown}"
    );

    // Safe to publish the inward answers now.
    let mut records = canary_records.to_vec();
    records.extend([
        json!({"name": "sink.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "mx.sink.test", "type": "A", "value": "127.0.0.1"}),
        json!({"name": "acme.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "inward.test", "type": "MX", "value": "10 mx.inward.test"}),
        json!({"name": "mx.inward.test", "type": "A", "value": "10.0.0.1"}),
        json!({"name": "meta.test", "type": "A", "value": "169.254.169.254"}),
    ]);
    dns.set_records(json!({ "records": records }));
    let inward = submit_one(
        &mm,
        &acct,
        &["u@inward.test"],
        &message("inward", "u@inward.test"),
    );
    let meta = submit_one(
        &mm,
        &acct,
        &["u@meta.test"],
        &message("meta", "u@meta.test"),
    );
    for (id, address) in [(&inward, "10.0.0.1"), (&meta, "169.254.169.254")] {
        let shown = wait_for_recipient(
            &mm,
            &acct.id,
            id,
            "bounced",
            &["5.4.4", address],
            Duration::from_secs(20),
        );
        assert_refused_address(&shown, address);
    }

    // The sender hears about each: DSNs (null sender) to app@acme.test at the sink.
    let wanted = [
        "Final-Recipient: rfc822; u@canary.test",
        "Final-Recipient: rfc822; u@inward.test",
        "Final-Recipient: rfc822; u@meta.test",
    ];
    wait_for(
        "DSNs for the three bounces",
        Duration::from_secs(30),
        || {
            let dsns: Vec<String> = sink
                .messages()
                .into_iter()
                .filter(|m| m.mail_from.is_empty() && m.rcpt_tos == [SENDER])
                .map(|m| m.text())
                .collect();
            let missing: Vec<_> = wanted
                .iter()
                .filter(|w| !dsns.iter().any(|d| d.contains(*w)))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?} in {} DSNs", dsns.len()))
            }
        },
    );
    assert_eq!(canary.connections(), 0);
}

/// The recipient's last reply is a permanent 5.4.4 that names `address` and says why: it is
/// not allowed, or which setting would allow it.
#[track_caller]
fn assert_refused_address(shown: &Value, address: &str) {
    let reply = only_recipient(shown)["last_reply"]
        .as_str()
        .unwrap_or_default();
    assert!(reply.starts_with("550 5.4.4"), "{reply}");
    assert!(reply.contains(address), "the address is named: {reply}");
    assert!(
        reply.contains("not allowed") || reply.contains("allowed_networks"),
        "the reason is given: {reply}"
    );
}

/// With no network allowed (the production default), an MX on 127.0.0.1 is refused: the
/// recipient bounces with 5.4.4 naming the address, and the sink, which is there, never sees a
/// connection (nor does the DSN, whose MX is the same loopback address).
#[test]
fn loopback_mx_is_refused_unless_allowed() {
    if !common::require_support() {
        return;
    }
    let sink = Sink::start(&[]);
    let dns = dns(&[]);
    let mm = node(
        &dns,
        sink.port(),
        &[("MAILMUX_DELIVERY__ALLOWED_NETWORKS", "[]")],
        None,
    );
    let acct = sender(&mm);
    let id = submit_one(
        &mm,
        &acct,
        &["u@sink.test"],
        &message("loopback", "u@sink.test"),
    );
    let shown = wait_for_recipient(
        &mm,
        &acct.id,
        &id,
        "bounced",
        &["5.4.4", "127.0.0.1"],
        Duration::from_secs(20),
    );
    assert_refused_address(&shown, "127.0.0.1");
    // The DSN is refused the same way; give it the time it would take to arrive.
    let reached = common::wait_until(Duration::from_secs(3), || {
        (counter(&sink, "connections") > 0).then_some(())
    });
    assert!(
        reached.is_none(),
        "connected to 127.0.0.1 with no allowed networks: {}",
        sink.counts()
    );
}

/// A message with more `Received:` fields than `delivery.max_received_headers` (50) has gone
/// round in circles: it bounces as a loop (554 5.4.6), is not delivered, and the sender gets a
/// DSN; one with exactly 50 is delivered. The count is of the fields the message carries when
/// it leaves, our own Received: included (as Postfix's hopcount_limit counts): submitted with
/// 49 it leaves with 50, submitted with 50 it would leave with 51.
#[test]
fn a_message_with_too_many_received_headers_bounces_as_a_loop() {
    if !common::require_support() {
        return;
    }
    let sink = Sink::start(&[]);
    let dns = dns(&[]);
    let mm = node(&dns, sink.port(), &[], None);
    let acct = sender(&mm);
    let with_hops = |tag: &str, hops: usize| {
        let mut raw = String::new();
        for hop in (1..=hops).rev() {
            raw.push_str(&format!(
                "Received: from hop{hop}.example (hop{hop}.example [127.0.0.1])\r\n \
                 by hop{}.example; Mon, 23 Nov 2026 11:{:02}:00 +0000\r\n",
                hop + 1,
                hop % 60
            ));
        }
        raw.push_str(std::str::from_utf8(&message(tag, "u@sink.test")).unwrap());
        raw.into_bytes()
    };

    let at_limit = submit_one(&mm, &acct, &["u@sink.test"], &with_hops("hops-49", 49));
    let report = submit(&mm, &acct, &["u@sink.test"], &with_hops("hops-50", 50), 1);
    if report["code"] == 250 {
        // Accepted, then bounced by delivery.
        let id = queue_id(report["text"].as_str().unwrap());
        let shown = wait_for_recipient(
            &mm,
            &acct.id,
            &id,
            "bounced",
            &["5.4.6", "loop"],
            Duration::from_secs(20),
        );
        let reply = only_recipient(&shown)["last_reply"]
            .as_str()
            .unwrap_or_default();
        assert!(reply.starts_with("554 5.4.6"), "{reply}");
    } else {
        // Refused at once: the same reply, to the client.
        assert_eq!(report["code"], 554, "{report}");
        let text = report["text"].as_str().unwrap_or_default();
        assert!(text.contains("5.4.6") && text.contains("loop"), "{report}");
    }

    wait_for_recipient(
        &mm,
        &acct.id,
        &at_limit,
        "delivered",
        &[],
        Duration::from_secs(20),
    );
    let one_over = format!("<hops-50@{SENDER_DOMAIN}>");
    // The sender hears of the bounce (when it was not refused to its face); by then a wrongly
    // delivered copy would have arrived too.
    let all = wait_for(
        "the DSN for the looping message",
        Duration::from_secs(10),
        || {
            let msgs = sink.messages();
            let dsn = msgs
                .iter()
                .any(|m| m.mail_from.is_empty() && m.text().contains(&one_over));
            if report["code"] != 250 || dsn {
                Ok(msgs)
            } else {
                Err(format!("{} messages, no DSN yet", msgs.len()))
            }
        },
    );
    let message_id = |m: &common::Received| common::header(&m.raw, "Message-ID");
    let delivered = all.iter().filter(|m| !m.mail_from.is_empty());
    let at_limit_copy = delivered
        .clone()
        .find(|m| message_id(m).as_deref() == Some(&format!("<hops-49@{SENDER_DOMAIN}>")[..]))
        .expect("the message at the limit was delivered");
    let received = String::from_utf8_lossy(&at_limit_copy.raw)
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with("received:"))
        .count();
    assert_eq!(
        received, 50,
        "the delivered message carries exactly the limit"
    );
    assert!(
        !delivered
            .clone()
            .any(|m| message_id(m).as_deref() == Some(one_over.as_str())),
        "the message over the limit was delivered"
    );
}
