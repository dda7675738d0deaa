//! A dead destination costs a bounded number of connections and does not hold up others.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{Sink, http};
use crate::support::{DeadDestination, dns, message, node, queue_id, sender, submit, wait_for};
use serde_json::{Value, json};

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
