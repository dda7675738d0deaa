//! End to end, forwarding on the MX: the real binary, a real receiving SMTP server (the next
//! hop) and the loopback DNS server. A `forward` rule's copy reaches the next hop from an SRS
//! sender whose SPF passes there (checked with pyspf, an independent implementation), byte for
//! byte after our trace headers; a `list` rule reaches every member (and needs
//! `mailing_lists`); a permanent failure of a forwarded copy bounces to the original sender; a
//! remote bounce to the SRS address is relayed to the original sender, while forged SRS
//! addresses and non-bounces to them are refused; the bare `<postmaster>` ends at
//! `inbound.postmaster`; a loop (too many Received: fields) is refused; per-tenant retention
//! is set through the API and the CLI.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DnsServer, Mailmux, Received, Sink};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// DNS: the inbound domain's SPF covers the relay (127.0.0.1), so SRS senders on it pass; the
/// forwarding destinations (example.net) and the original sender's domain (sender.test, for
/// bounces) have their MX at the sink; `relay.inbound.test` (the relay's `smtp.hostname` where a
/// test sets it, named by return-path records) is 127.0.0.1.
fn dns() -> DnsServer {
    DnsServer::start(json!({
        "zones": ["example.org", "example.net", "sender.test", "inbound.test", "org", "net",
                  "test"],
        "records": [
            {"name": "relay.inbound.test", "type": "A", "value": "127.0.0.1"},
            {"name": "bounce.inbound.test", "type": "MX", "value": "10 relay.inbound.test"},
            {"name": "bounce.inbound.test", "type": "TXT",
             "value": "v=spf1 a:relay.inbound.test ~all"},
            {"name": "sender.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"},
            {"name": "sender.test", "type": "MX", "value": "10 mx.example.net"},
            {"name": "inbound.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"},
            {"name": "example.net", "type": "MX", "value": "10 mx.example.net"},
            {"name": "mx.example.net", "type": "A", "value": "127.0.0.1"},
        ],
    }))
}

fn start(dns: &DnsServer, sink: &Sink, extra: &[(&str, &str)]) -> Mailmux {
    let servers = dns.dns_servers_env();
    let port = sink.port().to_string();
    let mut env = vec![
        ("MAILMUX_DELIVERY__DNS_SERVERS", servers.as_str()),
        ("MAILMUX_DELIVERY__MX_PORT", port.as_str()),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS", "200"),
    ];
    env.extend_from_slice(extra);
    Mailmux::start(&env)
}

/// A tenant of `tier` with `domain` verified and inbound.
fn inbound_tenant(mm: &Mailmux, tier: &str, domain: &str) -> String {
    let tenant = mm.create_tenant(&format!("fwd-{tier}"), tier);
    let (status, body) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": domain, "verified": true, "inbound": true})),
    );
    assert_eq!(status, 201, "{body}");
    tenant
}

fn rule(mm: &Mailmux, tenant: &str, body: Value) -> (u16, Value) {
    mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/addresses"),
        Some(body),
    )
}

/// What the MX answered one transaction (smtplib): MAIL, each RCPT, and DATA (when a RCPT
/// was accepted).
#[derive(Debug)]
struct Transaction {
    rcpt: Vec<(u16, String)>,
    data: Option<(u16, String)>,
}

fn send(mx: SocketAddr, mail_from: &str, rcpts: &[&str], message: &[u8]) -> Transaction {
    let code = r#"
import json, smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("mta.example.org")
code, text = s.docmd("MAIL FROM:<%s>" % sys.argv[3])
assert code == 250, (code, text)
out = {"rcpt": [], "data": None}
for r in json.loads(sys.argv[4]):
    code, text = s.docmd("RCPT TO:<%s>" % r)
    out["rcpt"].append([code, text.decode()])
if any(c == 250 for c, _ in out["rcpt"]):
    try:
        code, text = s.data(open(sys.argv[5], "rb").read())
    except smtplib.SMTPDataError as e:
        code, text = e.smtp_code, e.smtp_error
    out["data"] = [code, text.decode()]
s.quit()
print(json.dumps(out))
"#;
    let dir = common::TestDir::new("forward-msg");
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).unwrap();
    let port = mx.port().to_string();
    let rcpts = serde_json::to_string(rcpts).unwrap();
    let args = [
        "127.0.0.1",
        port.as_str(),
        mail_from,
        rcpts.as_str(),
        path.to_str().unwrap(),
    ];
    let out: Value = serde_json::from_str(common::python_eval(code, &args).trim()).unwrap();
    let pair = |v: &Value| {
        (
            v[0].as_u64().unwrap() as u16,
            v[1].as_str().unwrap().to_string(),
        )
    };
    Transaction {
        rcpt: out["rcpt"].as_array().unwrap().iter().map(pair).collect(),
        data: (!out["data"].is_null()).then(|| pair(&out["data"])),
    }
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@sender.test>\r\nTo: info@inbound.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@sender.test>\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\
         \r\nHello,\r\n.a line that starts with a dot\r\nend\r\n"
    )
    .into_bytes()
}

/// The next hop's SPF verdict (pyspf, with its DNS pointed at the loopback server) for mail
/// from `sender` sent by 127.0.0.1.
fn spf_at_next_hop(dns: &DnsServer, sender: &str) -> String {
    let code = r#"
import sys, dns.resolver, spf
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
dns.resolver.default_resolver = r
print(spf.check2(i="127.0.0.1", s=sys.argv[2], h="mx.example.net")[0])
"#;
    let port = dns.port().to_string();
    common::python_eval(code, &[&port, sender])
        .trim()
        .to_string()
}

/// The sink's messages for which `pick` holds, once there are `n` of them.
fn wait_for(sink: &Sink, n: usize, pick: impl Fn(&Received) -> bool) -> Vec<Received> {
    common::wait_until(WAIT, || {
        let found: Vec<Received> = sink.messages().into_iter().filter(|m| pick(m)).collect();
        (found.len() >= n).then_some(found)
    })
    .unwrap_or_else(|| {
        panic!(
            "the sink did not get {n} such messages: {:?}",
            sink.messages()
        )
    })
}

/// The names of the header fields of `head` (a header block), continuation lines skipped.
fn field_names(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap_or("").to_string())
        .collect()
}

/// What every test here needs: the DNS server, the next hop (the sink, with `sink_args`),
/// mailmux (with `env`) and a professional tenant with `inbound.test` verified and inbound;
/// `None` when the Python support processes (or pyspf) are missing.
fn setup(sink_args: &[&str], env: &[(&str, &str)]) -> Option<(DnsServer, Sink, Mailmux, String)> {
    if !(common::require_support() && common::require_python_module("spf")) {
        return None;
    }
    let dns = dns();
    let sink = Sink::start(sink_args);
    let mm = start(&dns, &sink, env);
    let tenant = inbound_tenant(&mm, "professional", "inbound.test");
    Some((dns, sink, mm, tenant))
}

#[test]
fn forward_rewrites_the_sender_with_srs_and_bounces_find_the_original_sender() {
    let Some((dns, sink, mm, tenant)) = setup(&["--reject-rcpt", "^nobody@"], &[]) else {
        return;
    };

    // Validation: 422 with the field named.
    for (body, want) in [
        (
            json!({"address": "info@inbound.test", "action": "forward"}),
            "forward_to",
        ),
        (
            json!({"address": "info@inbound.test", "action": "forward", "forward_to": ["x"]}),
            "not an address",
        ),
        (
            json!({"address": "info@inbound.test", "action": "forward",
                   "forward_to": ["info@inbound.test"]}),
            "own address",
        ),
    ] {
        let (status, error) = rule(&mm, &tenant, body);
        assert_eq!(status, 422, "{error}");
        assert!(error.to_string().contains(want), "{error}");
    }
    let (status, created) = rule(
        &mm,
        &tenant,
        json!({"address": "info@inbound.test", "action": "forward",
               "forward_to": ["bob@example.net", "carol@example.net"]}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["forward_to"],
        json!(["bob@example.net", "carol@example.net"])
    );
    let (status, _) = rule(
        &mm,
        &tenant,
        json!({"address": "fail@inbound.test", "action": "forward",
               "forward_to": ["nobody@example.net"]}),
    );
    assert_eq!(status, 201);

    // 1. The forwarded copy: SRS sender on inbound.test, SPF passes at the next hop, the
    //    bytes are the original's after our trace headers.
    let original = message("forwarded");
    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["info@inbound.test"],
        &original,
    );
    assert_eq!(sent.rcpt[0].0, 250, "{sent:?}");
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let copy = wait_for(&sink, 1, |m| {
        m.rcpt_tos.iter().any(|r| r == "bob@example.net")
    })
    .remove(0);
    assert_eq!(copy.rcpt_tos, ["bob@example.net", "carol@example.net"]);
    let srs_sender = copy.mail_from.clone();
    assert!(srs_sender.starts_with("SRS0="), "{srs_sender}");
    assert!(
        srs_sender.ends_with("=sender.test=alice@inbound.test"),
        "{srs_sender}"
    );
    assert_eq!(spf_at_next_hop(&dns, &srs_sender), "pass");
    assert_eq!(
        spf_at_next_hop(&dns, "alice@sender.test"),
        "pass",
        "control"
    );
    assert!(copy.raw.ends_with(&original), "{}", copy.text());
    let ours = field_names(&copy.raw[..copy.raw.len() - original.len()]);
    assert!(ours.contains(&"Received".to_string()), "{ours:?}");
    assert!(
        ours.contains(&"Authentication-Results".to_string()),
        "{ours:?}"
    );
    for name in &ours {
        assert!(
            ["Received", "Authentication-Results", "DKIM-Signature"].contains(&name.as_str()),
            "only our trace headers go on top: {ours:?}"
        );
    }

    // 2. Our own delivery of a forwarded copy fails for good: the DSN goes to the original
    //    sender, not to the SRS address.
    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["fail@inbound.test"],
        &message("fails"),
    );
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let dsn = wait_for(&sink, 1, |m| m.rcpt_tos == ["alice@sender.test"]).remove(0);
    assert_eq!(dsn.mail_from, "", "a DSN comes from the null sender");
    assert!(dsn.text().contains("nobody@example.net"), "{}", dsn.text());
    assert!(dsn.text().contains("Subject: fails"), "{}", dsn.text());

    // 3. A remote bounce to the SRS address comes back to the MX: relayed to the original
    //    sender from the null sender.
    let bounce = b"From: MAILER-DAEMON@example.net\r\nTo: x\r\nSubject: remote bounce\r\n\r\n\
        Your message could not be delivered.\r\n";
    let sent = send(mm.mx(), "", &[srs_sender.as_str()], bounce);
    assert_eq!(sent.rcpt[0].0, 250, "{sent:?}");
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let relayed = wait_for(&sink, 1, |m| m.text().contains("Subject: remote bounce")).remove(0);
    assert_eq!(relayed.rcpt_tos, ["alice@sender.test"]);
    assert_eq!(relayed.mail_from, "");
    // The hash is compared without regard to case.
    let sent = send(mm.mx(), "", &[srs_sender.to_lowercase().as_str()], bounce);
    assert_eq!(sent.rcpt[0].0, 250, "{sent:?}");

    // 4. Forged SRS addresses get 550 5.1.1; a non-bounce to a valid one is refused.
    let forged = srs_sender.replacen(&srs_sender[5..9], "AAAA", 1);
    let sent = send(
        mm.mx(),
        "",
        &[
            forged.as_str(),
            "SRS0=AAAA=AA=x.test=y@inbound.test",
            "SRS0=zz@inbound.test",
        ],
        b"",
    );
    for (code, text) in &sent.rcpt {
        assert_eq!(*code, 550, "{sent:?}");
        assert!(text.starts_with("5.1.1"), "{sent:?}");
    }
    let sent = send(mm.mx(), "spammer@example.org", &[srs_sender.as_str()], b"");
    assert_eq!(sent.rcpt[0].0, 550, "{sent:?}");
    assert!(sent.rcpt[0].1.starts_with("5.7.1"), "{sent:?}");

    // 5. A message in a loop (as many Received: fields as delivery allows) is refused.
    let mut looping = "Received: from a by b; Mon, 30 Nov 2026 12:00:00 +0000\r\n".repeat(50);
    looping.push_str(std::str::from_utf8(&message("loop")).unwrap());
    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["info@inbound.test"],
        looping.as_bytes(),
    );
    let (code, text) = sent.data.unwrap();
    assert_eq!((code, &text[..5]), (554, "5.4.6"), "{text}");
}

#[test]
fn the_verified_return_path_domain_is_the_srs_domain() {
    let Some((dns, sink, mm, tenant)) =
        setup(&[], &[("MAILMUX_SMTP__HOSTNAME", "relay.inbound.test")])
    else {
        return;
    };
    let path = format!("/api/tenants/{tenant}/domains/inbound.test/return-path");
    let (status, body) = mm.api(
        "PUT",
        &path,
        Some(json!({"return_path": "bounce.inbound.test"})),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = mm.api("POST", &format!("{path}/verify"), None);
    assert_eq!(status, 200, "{body}");
    let (status, _) = rule(
        &mm,
        &tenant,
        json!({"address": "info@inbound.test", "action": "forward",
               "forward_to": ["bob@example.net"]}),
    );
    assert_eq!(status, 201);
    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["info@inbound.test"],
        &message("rp"),
    );
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let copy = wait_for(&sink, 1, |m| m.text().contains("Subject: rp")).remove(0);
    assert!(
        copy.mail_from
            .ends_with("=sender.test=alice@bounce.inbound.test"),
        "{}",
        copy.mail_from
    );
    assert_eq!(spf_at_next_hop(&dns, &copy.mail_from), "pass");
    // Its bounces come back to the MX on the return-path domain and are relayed on.
    let bounce = b"From: MAILER-DAEMON@example.net\r\nSubject: rp bounce\r\n\r\nno\r\n";
    let sent = send(mm.mx(), "", &[copy.mail_from.as_str()], bounce);
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let relayed = wait_for(&sink, 1, |m| m.text().contains("Subject: rp bounce")).remove(0);
    assert_eq!(relayed.rcpt_tos, ["alice@sender.test"]);
}

#[test]
fn list_rules_reach_every_member_and_need_mailing_lists() {
    let Some((dns, sink, mm, tenant)) = setup(&[], &[]) else {
        return;
    };
    let members = ["m1@example.net", "m2@example.net", "m3@example.net"];
    let (status, created) = rule(
        &mm,
        &tenant,
        json!({"address": "team@inbound.test", "action": "list", "members": members}),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["members"], json!(members));

    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["team@inbound.test"],
        &message("list"),
    );
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let copy = wait_for(&sink, 1, |m| m.text().contains("Subject: list")).remove(0);
    assert_eq!(copy.rcpt_tos, members);
    assert_eq!(
        copy.header("List-Id").as_deref(),
        Some("<team.inbound.test>")
    );
    assert!(copy.mail_from.starts_with("SRS0="), "{}", copy.mail_from);
    assert_eq!(spf_at_next_hop(&dns, &copy.mail_from), "pass");

    // Without the feature the rule cannot be made (422), and an existing one stops at RCPT.
    let free = inbound_tenant(&mm, "free", "free.test");
    let (status, error) = rule(
        &mm,
        &free,
        json!({"address": "team@free.test", "action": "list", "members": members}),
    );
    assert_eq!(status, 422, "{error}");
    assert!(error.to_string().contains("mailing_lists"), "{error}");
    let (status, _) = mm.api(
        "PUT",
        &format!("/api/tenants/{tenant}"),
        Some(json!({"features": {"mailing_lists": false}})),
    );
    assert_eq!(status, 200);
    let sent = send(mm.mx(), "alice@sender.test", &["team@inbound.test"], b"");
    assert_eq!(sent.rcpt[0].0, 550, "{sent:?}");
    assert!(sent.rcpt[0].1.starts_with("5.7.1"), "{sent:?}");
    assert!(sent.rcpt[0].1.contains("mailing_lists"), "{sent:?}");

    // The CLI makes the same rules: --forward-to and --members.
    let made = mm.cli([
        "address",
        "create",
        "--tenant",
        &tenant,
        "--address",
        "cli@inbound.test",
        "--action",
        "forward",
        "--forward-to",
        "a@example.net,b@example.net",
    ]);
    assert_eq!(
        made["forward_to"],
        json!(["a@example.net", "b@example.net"])
    );
    let listed = mm.cli(["address", "list", "--tenant", &tenant]);
    assert_eq!(listed["addresses"].as_array().unwrap().len(), 2, "{listed}");
}

#[test]
fn bare_postmaster_ends_at_the_configured_postmaster() {
    let Some((dns, sink, mm, tenant)) = setup(
        &[],
        &[("MAILMUX_INBOUND__POSTMASTER", "postmaster@inbound.test")],
    ) else {
        return;
    };
    // Any case, no domain: accepted, and kept for the tenant as postmaster@inbound.test mail.
    let sent = send(
        mm.mx(),
        "alice@sender.test",
        &["PostMaster"],
        &message("pm"),
    );
    assert_eq!(sent.rcpt[0].0, 250, "{sent:?}");
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let (status, stored) = mm.api("GET", &format!("/api/tenants/{tenant}/inbound"), None);
    assert_eq!(status, 200, "{stored}");
    let recipients = &stored["messages"][0]["recipients"];
    assert_eq!(
        recipients[0]["address"], "postmaster@inbound.test",
        "{stored}"
    );
    // The null path is still not a recipient.
    let sent = send(mm.mx(), "alice@sender.test", &[""], b"");
    assert_eq!(sent.rcpt[0].0, 501, "{sent:?}");

    // Without inbound.postmaster: accepted all the same, and kept in the operator's postmaster
    // mailbox (the API and the CLI), byte for byte; a tenant's key does not see it.
    let bare = start(&dns, &sink, &[]);
    let sent = send(
        bare.mx(),
        "alice@sender.test",
        &["postmaster"],
        &message("pm-operator"),
    );
    assert_eq!(sent.rcpt[0].0, 250, "{sent:?}");
    assert_eq!(sent.data.as_ref().unwrap().0, 250, "{sent:?}");
    let (status, mailbox) = bare.api("GET", "/api/postmaster", None);
    assert_eq!(status, 200, "{mailbox}");
    let listed = mailbox["messages"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{mailbox}");
    assert_eq!(listed[0]["mail_from"], "alice@sender.test", "{mailbox}");
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let (status, shown) = bare.api("GET", &format!("/api/postmaster/{id}"), None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["subject"], "pm-operator", "{shown}");
    let (status, raw) = common::http_raw(
        bare.admin(),
        &format!("/api/postmaster/{id}/raw"),
        bare.admin_token(),
    );
    assert_eq!(status, 200);
    assert!(
        raw.ends_with(&message("pm-operator")),
        "byte for byte after our trace headers"
    );
    let cli = bare.cli(["postmaster", "list"]);
    assert_eq!(cli["messages"][0]["id"], id.as_str(), "{cli}");
    let tenant_key = bare.cli([
        "api-key",
        "create",
        "--tenant",
        &bare.create_tenant("other", "professional"),
    ]);
    let (status, refused) = common::http(
        bare.admin(),
        "GET",
        "/api/postmaster",
        tenant_key["key"].as_str(),
        None,
    );
    assert_eq!(status, 403, "{refused}");
}

#[test]
fn inbound_retention_is_a_tenant_setting() {
    let mm = Mailmux::start(&[]);
    let tenant = mm.create_tenant("keep", "starter");
    let path = format!("/api/tenants/{tenant}");
    let (_, before) = mm.api("GET", &path, None);
    assert_eq!(before["inbound_retention_days"], 0, "{before}");
    let (status, _) = mm.api("PUT", &path, Some(json!({"inbound_retention_days": 7})));
    assert_eq!(status, 200);
    let (_, after) = mm.api("GET", &path, None);
    assert_eq!(after["inbound_retention_days"], 7, "{after}");
    let (status, error) = mm.api("PUT", &path, Some(json!({"inbound_retention_days": 99999})));
    assert_eq!(status, 422, "{error}");
    let updated = mm.cli([
        "tenant",
        "update",
        "--tenant",
        &tenant,
        "--inbound-retention-days",
        "3",
    ]);
    assert_eq!(updated["inbound_retention_days"], 3, "{updated}");
}
