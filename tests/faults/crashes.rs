//! Crashes and shutdowns: `kill -9` under load, a database that goes away, SIGTERM.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Mailmux, Sink, TestTenant};
use crate::support::{
    Load, SENDER, SENDER_DOMAIN, admin_db, counter, data_log, data_log_path, dns, healthz, history,
    leases_held, message, node, only_recipient, sender, sink_args, submit, submit_one, wait_for,
    wait_for_all,
};
use serde_json::Value;

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

/// Whether a new client at `addr` gets an SMTP greeting (within 1 s).
fn serves_a_session(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(n) if n >= 3 && buf.starts_with(b"220"))
}

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
        // Killed mid-burst: with deliveries, commits and reports in flight.
        load.wait_for_more_accepted(1500);
        let lost_before = load.errors.load(Ordering::Relaxed);
        mm.kill9();
        println!(
            "crash cycle {cycle}: killed at {} acknowledged",
            load.accepted_count()
        );
        load.wait_for_lost_connection(lost_before);
        mm.restart();
    }
    // The sessions reconnect and submit to the last incarnation too.
    load.wait_for_more_accepted(500);
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

/// Spooled bodies of 100 KiB and 1 MiB across `kill -9`, on SQLite: see [`large_bodies_survive`].
#[test]
fn large_bodies_survive_crashes_on_sqlite() {
    if !common::require_support() {
        return;
    }
    large_bodies_survive(None);
}

/// The same on Postgres.
#[test]
fn large_bodies_survive_crashes_on_postgres() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    large_bodies_survive(Some(&url));
}

/// For 100 KiB and then 1 MiB bodies: 4 sessions submit continuously; three times, after a
/// few more acknowledgements, `kill -9` and restart. Every acknowledged message is delivered,
/// and a message reaches the remote twice only across a kill: the remote had its final dot, and
/// the kill came before its 250 was journaled (the window RFC 1047 describes; the crash-cycle
/// test measures its rate). Once everything is delivered the spool holds no file: bodies of
/// finished messages were deleted, and the bodies a kill caught between their write and their
/// commit were swept at the restart.
fn large_bodies_survive(db: Option<&str>) {
    let dns = dns(&[]);
    let dir = common::TestDir::new("mailmux-faults-large");
    let log = data_log_path(&dir, "sink");
    let sink = Sink::start(&sink_args(&log, &[]));
    let mut mm = node(&dns, sink.port(), &[], db);
    let acct = sender(&mm);
    // The sink's DATA log length at each kill: what the remote had received by then.
    let mut kills = Vec::new();
    for (size, per_cycle) in [(100 * 1024, 40), (1024 * 1024, 8)] {
        let load = Load::start_sized(&mm, &acct, "user@sink.test", 4, size);
        for _ in 0..3 {
            load.wait_for_more_accepted(per_cycle);
            let lost_before = load.errors.load(Ordering::Relaxed);
            mm.kill9();
            load.wait_for_lost_connection(lost_before);
            // What the dead node had written to its sockets still reaches the sink, and may
            // end with a final dot the sink takes: the snapshot waits until it has all.
            wait_for(
                "the sink to see the dead node's connections closed",
                Duration::from_secs(30),
                || match (counter(&sink, "connections"), counter(&sink, "closed")) {
                    (opened, closed) if opened == closed => Ok(()),
                    (opened, closed) => Err(format!("{} open", opened - closed)),
                },
            );
            kills.push(data_log(&log).len());
            mm.restart();
        }
        load.wait_for_more_accepted(per_cycle);
        let (acknowledged, _) = load.stop();
        let delivered = wait_for_all(
            &sink,
            &acknowledged,
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        let lost = delivered.missing(&acknowledged);
        let duplicated = delivered.duplicated();
        let unexplained = resent_without_a_kill(&data_log(&log), &kills);
        println!(
            "large bodies ({size} bytes, {}): acknowledged={} lost={} duplicated={} (without a \
             kill in between: {})",
            if db.is_some() { "Postgres" } else { "SQLite" },
            acknowledged.len(),
            lost.len(),
            duplicated.len(),
            unexplained.len(),
        );
        assert!(lost.is_empty(), "{size}-byte messages lost: {lost:?}");
        assert!(
            unexplained.is_empty(),
            "{size}-byte messages sent again with no crash in between: {unexplained:?} (the \
             sink's DATA log had {kills:?} entries at the kills; the log: {})",
            log.display()
        );
        let spool = mm.data_dir().join("spool");
        wait_for(
            "an empty spool once everything is delivered",
            Duration::from_secs(30),
            || match spooled_files(&spool) {
                files if files.is_empty() => Ok(()),
                files => Err(format!(
                    "{} files left: {:?}",
                    files.len(),
                    &files[..files.len().min(5)]
                )),
            },
        );
    }
}

/// Message-IDs the DATA log shows twice with no kill between the two copies (`kills`: the log's
/// length at each kill).
fn resent_without_a_kill(log: &[Value], kills: &[usize]) -> Vec<String> {
    let mut positions: HashMap<&str, Vec<usize>> = HashMap::new();
    for (n, entry) in log.iter().enumerate() {
        if let Some(id) = entry["message_id"].as_str() {
            positions.entry(id).or_default().push(n);
        }
    }
    let mut unexplained: Vec<String> = positions
        .into_iter()
        .filter(|(_, at)| {
            at.windows(2)
                .any(|pair| !kills.iter().any(|&k| pair[0] < k && k <= pair[1]))
        })
        .map(|(id, _)| id.to_string())
        .collect();
    unexplained.sort();
    unexplained
}

/// Every file under the spool directory (one sub-directory per node).
fn spooled_files(spool: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for node in std::fs::read_dir(spool)
        .expect("the spool directory")
        .flatten()
    {
        if let Ok(entries) = std::fs::read_dir(node.path()) {
            files.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }
    files
}

// ==============================================================================================
// 5. Supervised, and honest about it

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
