//! DKIM signing end to end: the real binary signs what it relays, the loopback DNS server
//! publishes the public keys taken from `domain add` (and from rotations), the aiosmtpd sink
//! receives, and Python's dkimpy, an implementation that shares no code with mailmux, verifies
//! every received message (tests/support/dkim_verify.py).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DnsServer, Mailmux, Received, Sink};
use serde_json::{Value, json};

fn require() -> bool {
    common::require_python_modules(&["aiosmtpd", "dnslib", "dkim", "nacl"])
}

/// MX for sink.test on 127.0.0.1 (where the sink listens), plus `extra` records.
fn zone(extra: &[Value]) -> Value {
    let mut records = vec![
        json!({"name": "sink.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "mx.sink.test", "type": "A", "value": "127.0.0.1"}),
    ];
    records.extend_from_slice(extra);
    json!(records)
}

fn relay(dns: &DnsServer, sink: &Sink, extra: &[(&str, &str)]) -> Mailmux {
    let dns_servers = dns.dns_servers_env();
    let port = sink.port().to_string();
    let mut env = vec![
        ("MAILMUX_DELIVERY__DNS_SERVERS", dns_servers.as_str()),
        ("MAILMUX_DELIVERY__MX_PORT", port.as_str()),
        ("MAILMUX_DELIVERY__RETRY_INITIAL_SECS", "1"),
        ("MAILMUX_DELIVERY__RETRY_FACTOR", "1.0"),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS", "200"),
        // Delivery reads tenants and keys for every message, so a change made through the API
        // applies to the next message and no test waits out the one-second cache (whose
        // bound the delivery crate's unit tests check on tokio's clock).
        ("MAILMUX_DELIVERY__CACHE_TTL_MS", "0"),
    ];
    env.extend_from_slice(extra);
    Mailmux::start(&env)
}

/// The DKIM record(s) of a domain view (`domain add`, GET, verify) as DNS records to serve.
fn dkim_records(view: &Value) -> Vec<Value> {
    view["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records in {view}"))
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| json!({"name": r["name"], "type": r["type"], "value": r["value"]}))
        .collect()
}

/// One DKIM record (from a rotation's answer) as a DNS record.
fn as_dns(record: &Value) -> Value {
    assert_eq!(record["type"], "TXT", "{record}");
    json!({"name": record["name"], "type": "TXT", "value": record["value"]})
}

/// A minimal HTTP/1.1 client for the admin API (one request per connection).
fn http(mm: &Mailmux, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let addr: SocketAddr = mm.admin();
    let mut stream = TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        mm.admin_token(),
        body.len()
    );
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
    assert!(
        !head.to_ascii_lowercase().contains("chunked"),
        "unexpected chunked answer"
    );
    (
        status,
        serde_json::from_str(rest).unwrap_or(Value::String(rest.into())),
    )
}

/// dkimpy's verdict on each file: one JSON object per file (see dkim_verify.py).
fn dkimpy(dns: &DnsServer, files: &[&Path]) -> Vec<Value> {
    let out = Command::new(common::python())
        .arg(common::support_dir().join("dkim_verify.py"))
        .arg("--dns")
        .arg(dns.addr().to_string())
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("run dkim_verify.py");
    assert!(
        out.status.success(),
        "dkim_verify.py: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(reports.len(), files.len());
    reports
}

/// The received messages' .eml files, verified by dkimpy: one report per message.
fn verify_received(dns: &DnsServer, sink: &Sink, messages: &[&Received]) -> Vec<Value> {
    let paths: Vec<_> = messages
        .iter()
        .map(|m| sink.messages_dir().join(format!("{:06}.eml", m.seq)))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    dkimpy(dns, &refs)
}

/// The one signature of a verified report, which must pass.
fn passing_signature(report: &Value) -> &Value {
    let sigs = report["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "one DKIM-Signature expected: {report}");
    assert_eq!(sigs[0]["pass"], true, "dkimpy refused it: {report}");
    &sigs[0]
}

fn find<'a>(received: &'a [Received], subject: &str) -> &'a Received {
    received
        .iter()
        .find(|m| m.header("Subject").is_some_and(|s| s.starts_with(subject)))
        .unwrap_or_else(|| panic!("message {subject:?} not delivered"))
}

/// Test messages of each shape, as the client sends them (smtplib dot-stuffs them on the wire).
fn message(shape: &str, from: &str, subject: &str) -> Vec<u8> {
    let head = format!(
        "From: Sender <{from}>\r\nTo: <user@sink.test>\r\nSubject: {subject}\r\n\
         Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@mailmux.test>\r\n\
         MIME-Version: 1.0\r\n"
    );
    let rest = match shape {
        "dot-stuffed" => "Content-Type: text/plain\r\n\r\n\
             .a line that starts with a dot\r\n..two dots\r\n.\r\n. dot space\r\nend\r\n"
            .to_string(),
        "8bit" => "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\
             \r\nGrüße aus Köln — ½ € ünïcödé\r\ntrailing spaces   \r\n\r\n\r\n"
            .to_string(),
        "long-header" => format!(
            "Cc: <cc1@sink.test>, <cc2@sink.test>,\r\n <cc3@sink.test>\r\n\
             Reply-To: <replies@example.test>\r\n\
             List-Unsubscribe: <https://example.test/unsubscribe/{}>,\r\n\t<mailto:u@example.test>\r\n\
             X-Long: {}\r\n Content-Type: text/plain\r\n\r\nbody\r\n",
            "x".repeat(120),
            (0..40).map(|i| format!("word{i}")).collect::<Vec<_>>().join("\r\n ")
        )
        .replace("\r\n Content-Type", "\r\nContent-Type"),
        "multipart" => "Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             This is a multi-part message in MIME format.\r\n\
             --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
             --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain text\r\n\
             --inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html</p>\r\n--inner--\r\n\
             --outer\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\n\
             AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n\
             --outer--\r\n"
            .to_string(),
        other => panic!("unknown shape {other}"),
    };
    format!("{head}{rest}").into_bytes()
}

fn submit(mm: &Mailmux, acct: &common::TestTenant, from: &str, msg: &[u8]) {
    let reply = common::submit_smtplib(
        mm.submission(),
        &acct.username,
        &acct.password,
        from,
        &["user@sink.test"],
        msg,
        false,
    );
    assert_eq!(reply["code"], 250, "{reply}");
}

/// A tenant of `tier` with `domain` added (verified by the operator) with a `key_type` key, and
/// one credential; returns it with the `domain add` answer.
fn tenant(
    mm: &Mailmux,
    name: &str,
    tier: &str,
    domain: &str,
    key_type: &str,
) -> (common::TestTenant, Value) {
    let id = mm.create_tenant(name, tier);
    let added = mm.cli([
        "domain",
        "add",
        "--tenant",
        &id,
        "--domain",
        domain,
        "--verified",
        "--key-type",
        key_type,
    ]);
    let (username, password) = mm.create_credential(&id);
    (
        common::TestTenant {
            id,
            domain: domain.into(),
            username,
            password,
        },
        added,
    )
}

const SHAPES: [&str; 4] = ["dot-stuffed", "8bit", "long-header", "multipart"];

#[test]
fn rsa_and_ed25519_signatures_verify_with_dkimpy_and_unsigned_without_the_feature() {
    if !require() {
        return;
    }
    let dns = DnsServer::start(zone(&[]));
    let sink = Sink::start(&[]);
    let mm = relay(&dns, &sink, &[]);
    let (rsa, rsa_added) = tenant(&mm, "rsa-co", "starter", "rsa.test", "rsa");
    let (ed, ed_added) = tenant(&mm, "ed-co", "starter", "ed.test", "ed25519");
    let (free, _) = tenant(&mm, "free-co", "free", "free.test", "rsa");
    // A second domain of the RSA tenant, to show which domain signs.
    let second = mm.cli([
        "domain",
        "add",
        "--tenant",
        &rsa.id,
        "--domain",
        "second.test",
        "--verified",
    ]);
    let mut published = dkim_records(&rsa_added);
    published.extend(dkim_records(&ed_added));
    published.extend(dkim_records(&second));
    assert_eq!(published.len(), 3, "{rsa_added}\n{ed_added}\n{second}");
    dns.set_records(zone(&published));

    // 1. A key that cannot be used defers the mail (451 4.7.0), never sends it unsigned; once
    //    the key is usable again the same message goes out signed.
    let master = mm.data_dir().join("master.key");
    let good = std::fs::read(&master).unwrap();
    std::fs::write(&master, [0x5a; 32]).unwrap();
    submit(
        &mm,
        &rsa,
        "app@rsa.test",
        &message("dot-stuffed", "app@rsa.test", "deferred-first"),
    );
    let log = common::wait_until(Duration::from_secs(20), || {
        let log = mm.log();
        log.contains("451 4.7.0").then_some(log)
    })
    .unwrap_or_else(|| panic!("no 451 4.7.0 deferral in the log:\n{}", mm.log_tail(40)));
    assert!(log.contains("master.key"), "the log must say why");
    assert!(sink.messages().is_empty(), "sent before it could be signed");
    std::fs::write(&master, good).unwrap();
    let received = sink.wait_for_messages(1, Duration::from_secs(30));
    let report = &verify_received(&dns, &sink, &[&received[0]])[0];
    assert_eq!(passing_signature(report)["d"], "rsa.test");

    // 2. Every shape, from both key types; the From: domain signs.
    for shape in SHAPES {
        submit(
            &mm,
            &rsa,
            "app@rsa.test",
            &message(shape, "app@rsa.test", &format!("rsa-{shape}")),
        );
        submit(
            &mm,
            &ed,
            "app@ed.test",
            &message(shape, "app@ed.test", &format!("ed-{shape}")),
        );
    }
    // From: and the envelope sender in two domains of the tenant: From:'s signs (DMARC aligns
    // on From:). (When From: names none of the tenant's domains with a key, the envelope
    // sender's domain signs; the SMTP policy refuses such a From: before it gets this far, so
    // the unit tests in crates/mailmux-delivery/src/dkim.rs cover that fallback.)
    submit(
        &mm,
        &rsa,
        "app@rsa.test",
        &message("8bit", "news@second.test", "rsa-second"),
    );
    // A free tenant has no dkim_signing: unsigned.
    submit(
        &mm,
        &free,
        "app@free.test",
        &message("8bit", "app@free.test", "free-unsigned"),
    );
    let received = sink.wait_for_messages(11, Duration::from_secs(60));

    let mut checked = Vec::new();
    for (prefix, domain, algorithm) in [
        ("rsa-", "rsa.test", "rsa-sha256"),
        ("ed-", "ed.test", "ed25519-sha256"),
    ] {
        for shape in SHAPES {
            let subject = format!("{prefix}{shape}");
            let m = find(&received, &subject);
            assert!(
                m.raw.starts_with(b"DKIM-Signature: "),
                "{subject}: the signature must be the first field:\n{}",
                m.text()
            );
            let report = &verify_received(&dns, &sink, &[m])[0];
            let sig = passing_signature(report);
            assert_eq!(sig["d"], domain, "{subject}");
            assert_eq!(sig["a"], algorithm, "{subject}");
            assert_eq!(sig["c"], "relaxed/relaxed", "{subject}");
            // h=: From over-signed; only present fields; our Received: not signed.
            let h: Vec<String> = sig["h"]
                .as_str()
                .unwrap()
                .split(':')
                .map(|n| n.to_ascii_lowercase())
                .collect();
            assert_eq!(
                h.iter().filter(|n| *n == "from").count(),
                2,
                "{subject}: {h:?}"
            );
            for name in [
                "to",
                "subject",
                "date",
                "message-id",
                "mime-version",
                "content-type",
            ] {
                assert!(
                    h.contains(&name.to_string()),
                    "{subject}: {name} not signed: {h:?}"
                );
            }
            let has_cc = shape == "long-header";
            assert_eq!(h.contains(&"cc".to_string()), has_cc, "{subject}: {h:?}");
            assert_eq!(
                h.contains(&"list-unsubscribe".to_string()),
                has_cc,
                "{subject}: {h:?}"
            );
            assert!(!h.contains(&"received".to_string()), "{subject}: {h:?}");
            checked.push(m);
        }
    }
    // The message arrives exactly as submitted, below the signature and our Received:.
    let dotted = find(&received, "rsa-dot-stuffed");
    assert!(
        dotted
            .raw
            .ends_with(&message("dot-stuffed", "app@rsa.test", "rsa-dot-stuffed"))
    );

    let second = find(&received, "rsa-second");
    assert_eq!(second.mail_from, "app@rsa.test");
    assert_eq!(
        passing_signature(&verify_received(&dns, &sink, &[second])[0])["d"],
        "second.test"
    );
    let unsigned = find(&received, "free-unsigned");
    assert!(
        unsigned.header("DKIM-Signature").is_none(),
        "{}",
        unsigned.text()
    );
    assert_eq!(
        verify_received(&dns, &sink, &[unsigned])[0]["signatures"],
        json!([])
    );

    // 3. Tampering breaks the signature: a changed body, a changed header, an added From:.
    let original = find(&received, "rsa-multipart").raw.clone();
    let ed_original = find(&received, "ed-8bit").raw.clone();
    let dir = mm.data_dir().join("tampered");
    std::fs::create_dir_all(&dir).unwrap();
    let body_at = original
        .windows(10)
        .position(|w| w == b"plain text")
        .unwrap();
    let mut body = original.clone();
    body[body_at] = b'P';
    let subject = String::from_utf8_lossy(&original)
        .replace("Subject: rsa-multipart", "Subject: rsa-multipart!");
    let text = String::from_utf8_lossy(&ed_original).into_owned();
    let added_from = text.replacen(
        "From: Sender",
        "From: Attacker <a@evil.test>\r\nFrom: Sender",
        1,
    );
    let ed_body = text.replace("Köln", "Koln");
    let cases: [(&str, Vec<u8>); 4] = [
        ("body", body),
        ("subject", subject.into_bytes()),
        ("added-from", added_from.into_bytes()),
        ("ed-body", ed_body.into_bytes()),
    ];
    let paths: Vec<_> = cases
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(format!("{name}.eml"));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    for ((name, _), report) in cases.iter().zip(dkimpy(&dns, &refs)) {
        let sigs = report["signatures"].as_array().unwrap();
        assert_eq!(sigs.len(), 1, "{name}: {report}");
        assert_eq!(
            sigs[0]["pass"], false,
            "tampered {name} still verifies: {report}"
        );
    }

    // 4. Turning dkim_signing off takes effect for the next message.
    mm.cli([
        "tenant",
        "update",
        "--tenant",
        &ed.id,
        "--feature",
        "dkim_signing=false",
    ]);
    submit(
        &mm,
        &ed,
        "app@ed.test",
        &message("8bit", "app@ed.test", "ed-off"),
    );
    let received = sink.wait_for_messages(12, Duration::from_secs(30));
    assert!(find(&received, "ed-off").header("DKIM-Signature").is_none());
}

#[test]
fn rotation_keeps_mail_verifiable_throughout() {
    if !require() {
        return;
    }
    let dns = DnsServer::start(zone(&[]));
    let sink = Sink::start(&[]);
    // The background check runs every second here (5 minutes by default), and a replaced key
    // stays listed for 6 s (7 days by default).
    let mm = relay(
        &dns,
        &sink,
        &[
            ("MAILMUX_DKIM__ROTATION_CHECK_SECS", "1"),
            ("MAILMUX_DKIM__RETIRING_SECS", "6"),
        ],
    );
    let (acct, added) = tenant(&mm, "rot-co", "starter", "rot.test", "rsa");
    let old = added["dkim"]["selector"].as_str().unwrap().to_string();
    let mut published = dkim_records(&added);
    dns.set_records(zone(&published));
    let domain_path = format!("/api/tenants/{}/domains/rot.test", acct.id);
    let send = |subject: &str| {
        submit(
            &mm,
            &acct,
            "app@rot.test",
            &message("multipart", "app@rot.test", subject),
        );
    };
    let selector_of = |received: &[Received], subject: &str| -> (String, String) {
        let m = find(received, subject);
        let report = &verify_received(&dns, &sink, &[m])[0];
        let sig = passing_signature(report);
        (
            sig["s"].as_str().unwrap().to_string(),
            sig["a"].as_str().unwrap().to_string(),
        )
    };

    // 1. Before any rotation.
    send("before-rotate");

    // 2. Rotate over the API: a new selector and the record to publish; signing stays.
    let (status, rotated) = http(&mm, "POST", &format!("{domain_path}/dkim/rotate"), None);
    assert_eq!(status, 201, "{rotated}");
    let new = rotated["selector"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["status"], "pending");
    assert_eq!(rotated["key_type"], "rsa");
    assert_eq!(rotated["active_selector"], old.as_str());
    let record = &rotated["record"];
    assert_eq!(record["type"], "TXT");
    assert_eq!(record["name"], format!("{new}._domainkey.rot.test"));
    assert!(
        record["value"]
            .as_str()
            .unwrap()
            .starts_with("v=DKIM1; k=rsa; p=MII")
    );
    assert_eq!(record["status"], "pending");
    let (_, view) = http(&mm, "GET", &domain_path, None);
    assert_eq!(view["dkim"]["selector"], old.as_str(), "{view}");
    let keys: Vec<(String, String)> = view["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| {
            (
                r["selector"].as_str().unwrap().to_string(),
                r["key_status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (old.clone(), "active".into()),
            (new.clone(), "pending".into())
        ]
    );

    // 3. Not published yet: a check (explicit, and the background one) keeps the old key.
    let (status, checked) = http(&mm, "POST", &format!("{domain_path}/verify"), None);
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["dkim"]["selector"], old.as_str(), "{checked}");
    // The background check (every second here) looks too and finds nothing either.
    let explicit_check = checked["checked_at"].as_i64().unwrap();
    let background = common::wait_until(Duration::from_secs(20), || {
        let (_, view) = http(&mm, "GET", &domain_path, None);
        (view["checked_at"].as_i64() > Some(explicit_check)).then_some(view)
    })
    .unwrap_or_else(|| panic!("no background check ran:\n{}", mm.log_tail(30)));
    assert_eq!(background["dkim"]["selector"], old.as_str(), "{background}");
    send("after-rotate-unpublished");

    // 4. Published (DNS holds both), verified: the new key signs from now on.
    published.push(as_dns(record));
    dns.set_records(zone(&published));
    let (status, switched) = http(&mm, "POST", &format!("{domain_path}/verify"), None);
    assert_eq!(status, 200, "{switched}");
    // The background check may have switched it first; either way the new key is active.
    let (_, switched) = if switched["dkim"]["selector"] == new.as_str() {
        (200, switched)
    } else {
        http(&mm, "GET", &domain_path, None)
    };
    assert_eq!(switched["dkim"]["selector"], new.as_str(), "{switched}");
    let retiring = switched["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["selector"] == old.as_str())
        .unwrap_or_else(|| panic!("the old key must stay listed: {switched}"));
    assert_eq!(retiring["status"], "retiring", "{retiring}");
    assert_eq!(retiring["key_status"], "retiring");
    let retire_in = retiring["retire_at"].as_i64().unwrap() - mailmux_core::now_ms();
    assert!(
        (0..=6_000).contains(&retire_in),
        "retire_at {retire_in} ms away"
    );
    send("after-verify");

    // 5. A second rotation over the CLI, to Ed25519, switched by the background check alone.
    let rotated2 = mm.cli([
        "domain",
        "rotate-dkim",
        "--tenant",
        &acct.id,
        "--domain",
        "rot.test",
        "--key-type",
        "ed25519",
    ]);
    let newer = rotated2["selector"].as_str().unwrap().to_string();
    assert_eq!(rotated2["key_type"], "ed25519");
    assert_eq!(rotated2["active_selector"], new.as_str());
    published.push(as_dns(&rotated2["record"]));
    dns.set_records(zone(&published));
    common::wait_until(Duration::from_secs(20), || {
        let (_, view) = http(&mm, "GET", &domain_path, None);
        (view["dkim"]["selector"] == newer.as_str()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the background check did not switch to {newer}:\n{}",
            mm.log_tail(30)
        )
    });
    send("after-background-switch");

    let received = sink.wait_for_messages(4, Duration::from_secs(60));
    assert_eq!(
        selector_of(&received, "before-rotate"),
        (old.clone(), "rsa-sha256".into())
    );
    assert_eq!(
        selector_of(&received, "after-rotate-unpublished"),
        (old.clone(), "rsa-sha256".into())
    );
    assert_eq!(
        selector_of(&received, "after-verify"),
        (new.clone(), "rsa-sha256".into())
    );
    assert_eq!(
        selector_of(&received, "after-background-switch"),
        (newer.clone(), "ed25519-sha256".into())
    );

    // 6. After the grace period the retired keys leave the list; the active one stays.
    common::wait_until(Duration::from_secs(20), || {
        let (_, view) = http(&mm, "GET", &domain_path, None);
        let dkim: Vec<Value> = view["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["purpose"] == "dkim")
            .cloned()
            .collect();
        (dkim.len() == 1 && dkim[0]["selector"] == newer.as_str()).then_some(())
    })
    .unwrap_or_else(|| panic!("retired keys still listed:\n{}", mm.log_tail(30)));
    // The audit log tells the story, once the background check dropped the retired keys
    // (the view hides them from `retire_at` on; the check removes them within a second).
    let audit_path = format!("/api/tenants/{}/audit", acct.id);
    let text = common::wait_until(Duration::from_secs(20), || {
        let (_, audit) = http(&mm, "GET", &audit_path, None);
        let text = audit.to_string();
        text.contains("domain.dkim_retire").then_some(text)
    })
    .unwrap_or_else(|| panic!("retired keys never dropped:\n{}", mm.log_tail(30)));
    for action in [
        "domain.dkim_rotate",
        "domain.dkim_activate",
        "domain.dkim_retire",
    ] {
        assert!(
            text.contains(action),
            "no {action} in the audit log: {text}"
        );
    }
}

/// Issue 11: what a submission server owes the mail it accepts, checked where it arrives. A
/// message without Date: and Message-ID: gets both; a multipart/alternative message with a
/// text part of lines over 998 octets arrives with every line within the limit, the text part
/// quoted-printable and decoding to the original, the base64 part byte for byte as sent; and
/// dkimpy verifies both signatures (made at delivery over the completed bytes).
#[test]
fn submitted_mail_is_completed_and_long_lines_arrive_reencoded_and_signed() {
    if !require() {
        return;
    }
    let dns = DnsServer::start(zone(&[]));
    let sink = Sink::start(&[]);
    let mm = relay(&dns, &sink, &[]);
    let (acct, added) = tenant(&mm, "long-co", "starter", "long.test", "rsa");
    dns.set_records(zone(&dkim_records(&added)));

    let bare = "From: App <app@long.test>\r\nTo: <user@sink.test>\r\nSubject: bare\r\n\r\n\
                no date, no id\r\n";
    submit(&mm, &acct, "app@long.test", bare.as_bytes());

    let long_line = format!("{} — fin", "Grüße aus Köln, ".repeat(120));
    let text = format!("first line\r\n{long_line}\r\nlast line\r\n");
    let base64_part = "Content-Type: application/octet-stream; name=\"a.bin\"\r\n\
                       Content-Transfer-Encoding: base64\r\n\r\n\
                       AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v\r\n";
    let long = format!(
        "From: App <app@long.test>\r\nTo: <user@sink.test>\r\nSubject: long\r\n\
         Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <long@long.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n\
         --inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>short</p>\r\n\
         --inner--\r\n--outer\r\n{base64_part}--outer--\r\n"
    );
    submit(&mm, &acct, "app@long.test", long.as_bytes());

    let received = sink.wait_for_messages(2, Duration::from_secs(60));
    let bare = find(&received, "bare");
    let date = bare.header("Date").expect("Date: added");
    assert!(
        mail_parser::DateTime::parse_rfc822(&date).is_some(),
        "{date}"
    );
    let id = bare.header("Message-ID").expect("Message-ID: added");
    assert!(
        id.starts_with('<') && id.ends_with('>') && id.contains('@'),
        "{id}"
    );
    assert!(
        bare.text().ends_with("\r\n\r\nno date, no id\r\n"),
        "{}",
        bare.text()
    );

    let long = find(&received, "long");
    assert!(
        long.raw.split(|&b| b == b'\n').all(|l| l.len() <= 1000),
        "a line over 998 octets arrived:\n{}",
        long.text()
    );
    let delivered = long.text();
    assert!(
        delivered.contains(
            "Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ),
        "{delivered}"
    );
    assert!(delivered.contains(base64_part), "the base64 part changed");
    assert!(delivered.contains("Message-ID: <long@long.test>\r\n"));
    let parsed = mail_parser::MessageParser::new()
        .parse(&long.raw)
        .expect("a message");
    // The CRLF before the boundary line belongs to the boundary.
    assert_eq!(parsed.body_text(0).unwrap(), text);
    assert_eq!(parsed.body_html(0).unwrap(), "<p>short</p>");

    for report in verify_received(&dns, &sink, &[bare, long]) {
        assert_eq!(passing_signature(&report)["d"], "long.test");
    }
}
