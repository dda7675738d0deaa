//! Leases: a remote slower than the lease, a node that dies for good, a reply lost after the final dot.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Mailmux, Sink, TestTenant};
use crate::support::{
    SENDER, SENDER_DOMAIN, counter, data_log, data_log_path, dns, history, message, node,
    only_recipient, sender, share_master_key, sink_args, submit_one, transactions_by_message_id,
    wait_for_all, wait_for_recipient,
};
use serde_json::{Value, json};

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
    // Nodes on one Postgres share the spool directory, as the configuration says they must.
    let spool = dir.path().join("spool").display().to_string();
    let env = [
        lease.as_slice(),
        &[("MAILMUX_QUEUE__SPOOL_DIR", spool.as_str())],
    ]
    .concat();
    let a = node(&dns, sink.port(), &env, Some(&url));
    let mut b = node(&dns, sink.port(), &env, Some(&url));
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

/// Two nodes on one Postgres; node A accepts a burst while its deliveries are slowed down (the
/// remote takes 300 ms per message), and is killed with `kill -9` after about 30
/// acknowledgements, for good. Node B delivers everything A acknowledged within about one lease
/// (3 s) plus a margin, reading their bodies from the spool directory the nodes share. A
/// message may arrive twice only if A had sent its final dot (A's copy
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
    // B reads the bodies A spooled: nodes on one Postgres share the spool directory.
    let spool = dir.path().join("spool").display().to_string();
    let env = |helo: &'static str| {
        [
            ("MAILMUX_QUEUE__LEASE_SECS", "3"),
            ("MAILMUX_DELIVERY__HELO_NAME", helo),
            ("MAILMUX_QUEUE__SPOOL_DIR", spool.as_str()),
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
