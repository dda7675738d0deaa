//! Never aimed inward: private, metadata and loopback MX answers; mail looping through too many hops.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common;
use crate::common::Sink;
use crate::support::{
    DeadDestination, SENDER, SENDER_DOMAIN, counter, dns, message, node, only_recipient, queue_id,
    sender, submit, submit_one, wait_for, wait_for_recipient,
};
use serde_json::{Value, json};

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
