//! End to end, inbound MX: the real binary, the admin API and the CLI on the same data dir, real
//! clients (swaks, Python smtplib) on the MX listener. A domain turned inbound (POST with
//! `"inbound": true`, PUT with the partial body, the CLI) lists its MX record; receipt rules
//! decide what is accepted (individual, catch-all, mixed, plus-addressing, reject); every relay
//! trick is refused; stored mail is fetched parsed and byte for byte; the storage limit bites.

mod common;

use std::net::SocketAddr;

use common::{DnsServer, Mailmux};
use serde_json::{Value, json};

/// The loopback DNS every test here runs against (the MX checks SPF, DKIM and DMARC, and tests
/// never leave loopback): the senders' zones, where names without records answer NXDOMAIN.
/// `extra` adds records.
fn dns(extra: &[Value]) -> DnsServer {
    let mut records = vec![
        json!({"name": "sender.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"}),
        json!({"name": "_dmarc.sender.test", "type": "TXT", "value": "v=DMARC1; p=reject"}),
        // SPF allows only an address that is not ours: mail from 127.0.0.1 fails it.
        json!({"name": "spoof.test", "type": "TXT", "value": "v=spf1 ip4:192.0.2.1 -all"}),
        json!({"name": "_dmarc.spoof.test", "type": "TXT", "value": "v=DMARC1; p=reject"}),
    ];
    records.extend_from_slice(extra);
    DnsServer::start(json!({
        // The parents too: DMARC walks the tree up to the top-level domain (RFC 9989).
        "zones": ["example.org", "example.net", "sender.test", "spoof.test", "inbound.test",
                  "org", "net", "test"],
        "records": records,
    }))
}

fn start(dns: &DnsServer) -> Mailmux {
    Mailmux::start(&[("MAILMUX_DELIVERY__DNS_SERVERS", &dns.dns_servers_env())])
}

/// A professional tenant with `inbound.test` added as verified and inbound through the API.
fn inbound_tenant(mm: &Mailmux) -> String {
    let tenant = mm.create_tenant("inbound", "professional");
    let (status, domain) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": "inbound.test", "verified": true, "inbound": true})),
    );
    assert_eq!(status, 201, "{domain}");
    assert_eq!(domain["inbound"], true);
    let mx: Vec<&Value> = domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "MX")
        .collect();
    assert_eq!(mx.len(), 1, "{domain}");
    assert_eq!(mx[0]["name"], "inbound.test");
    assert_eq!(mx[0]["purpose"], "mx");
    assert!(
        mx[0]["value"].as_str().unwrap().starts_with("10 "),
        "{mx:?}"
    );
    tenant
}

fn rule(mm: &Mailmux, tenant: &str, body: Value) -> Value {
    let (status, rule) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/addresses"),
        Some(body),
    );
    assert_eq!(status, 201, "{rule}");
    rule
}

/// RCPT replies (code, text) for each of `recipients`, one MAIL transaction, via smtplib.
fn rcpt_codes(mx: SocketAddr, recipients: &[&str]) -> Vec<(u16, String)> {
    let code = r#"
import json, smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=30)
s.ehlo("mta.example.org")
s.mail("someone@example.org")
out = []
for r in sys.argv[3:]:
    code, text = s.docmd("RCPT TO:<%s>" % r)
    out.append([code, text.decode()])
s.quit()
print(json.dumps(out))
"#;
    let port = mx.port().to_string();
    let mut args = vec!["127.0.0.1", port.as_str()];
    args.extend_from_slice(recipients);
    let out: Vec<(u16, String)> =
        serde_json::from_str(common::python_eval(code, &args).trim()).unwrap();
    out
}

#[test]
fn inbound_domains_through_api_and_cli_list_their_mx() {
    let mm = Mailmux::start(&[]);
    let tenant = mm.create_tenant("dom", "professional");
    // A sending domain has no MX record until inbound is turned on with the partial PUT.
    mm.add_verified_domain(&tenant, "plain.test");
    let path = format!("/api/tenants/{tenant}/domains/plain.test");
    let (_, before) = mm.api("GET", &path, None);
    assert_eq!(before["inbound"], false);
    assert!(
        !before["records"].to_string().contains("\"MX\""),
        "{before}"
    );
    let (status, after) = mm.api("PUT", &path, Some(json!({"inbound": true})));
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["inbound"], true);
    assert!(after["records"].to_string().contains("\"MX\""), "{after}");
    let (status, _) = mm.api("PUT", &path, Some(json!({"inbound": "yes"})));
    assert_eq!(status, 400);
    let (status, _) = mm.api("PUT", &path, Some(json!({"verified": true})));
    assert_eq!(status, 400, "unknown fields are refused");
    // The CLI: add with --inbound, then update it off.
    let added = mm.cli([
        "domain",
        "add",
        "--tenant",
        &tenant,
        "--domain",
        "cli.test",
        "--verified",
        "--inbound",
    ]);
    assert_eq!(added["inbound"], true, "{added}");
    let updated = mm.cli([
        "domain",
        "update",
        "--tenant",
        &tenant,
        "--domain",
        "cli.test",
        "--inbound",
        "false",
    ]);
    assert_eq!(updated["inbound"], false, "{updated}");
    assert!(!updated["records"].to_string().contains("\"MX\""));
}

#[test]
fn receipt_rules_decide_what_the_mx_accepts_and_stored_mail_comes_back_exact() {
    if !common::require_support() || !common::require_tool("swaks") {
        return;
    }
    let dns = dns(&[]);
    let mm = start(&dns);
    let tenant = inbound_tenant(&mm);
    let sales = rule(
        &mm,
        &tenant,
        json!({"address": "Sales@inbound.test", "action": "store"}),
    );
    assert_eq!(sales["address"], "sales@inbound.test");
    // An action that does not exist: refused with a clear 422 naming the ones that do.
    let (status, error) = mm.api(
        "POST",
        &format!("/api/tenants/{tenant}/addresses"),
        Some(json!({"address": "fwd@inbound.test", "action": "bounce"})),
    );
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected store, reject, webhook, forward or list"),
        "{error}"
    );
    for (body, want) in [
        (
            json!({"address": "a@elsewhere.test", "action": "store"}),
            404,
        ),
        (
            json!({"address": "a%b@inbound.test", "action": "store"}),
            422,
        ),
        (json!({"address": "nobody", "action": "store"}), 422),
        (
            json!({"address": "x@inbound.test", "action": "explode"}),
            422,
        ),
        (
            json!({"address": "sales@inbound.test", "action": "store"}),
            409,
        ),
    ] {
        let (status, answer) = mm.api(
            "POST",
            &format!("/api/tenants/{tenant}/addresses"),
            Some(body.clone()),
        );
        assert_eq!(status, want, "{body} → {answer}");
    }

    // Individual rules only: unknown users are 550 5.1.1, relay tricks 550 5.7.1.
    let mx = mm.mx();
    let relay_tricks = [
        "user@example.net",
        "sales%example.net@inbound.test",
        "example.net!sales@inbound.test",
        "example.net!sales",
        "\"sales@example.net\"@inbound.test",
        "sales@[127.0.0.1]",
        "sales@inbound.test.",
        "@inbound.test:user@example.net",
        "SALES@EXAMPLE.NET",
    ];
    for (address, (code, text)) in relay_tricks.iter().zip(rcpt_codes(mx, &relay_tricks)) {
        assert_eq!(code, 550, "{address}: {text}");
        assert!(text.starts_with("5.7.1"), "{address}: {text}");
    }
    let replies = rcpt_codes(
        mx,
        &[
            "bob@inbound.test",
            "SALES+q3@Inbound.Test",
            "postmaster@inbound.test",
        ],
    );
    assert_eq!(replies[0].0, 550);
    assert!(replies[0].1.starts_with("5.1.1"), "{replies:?}");
    assert_eq!(replies[1].0, 250, "{replies:?}");
    assert_eq!(replies[2].0, 250, "{replies:?}");

    // Mixed mode: a catch-all takes bob@, the reject rule still refuses noreply@ with its text.
    rule(
        &mm,
        &tenant,
        json!({"address": "*@inbound.test", "action": "store"}),
    );
    rule(
        &mm,
        &tenant,
        json!({"address": "noreply@inbound.test", "action": "reject",
               "reject_text": "Replies to this address are not read"}),
    );
    let replies = rcpt_codes(mx, &["bob@inbound.test", "noreply@inbound.test"]);
    assert_eq!(replies[0].0, 250, "{replies:?}");
    assert_eq!(replies[1].0, 550, "{replies:?}");
    assert!(replies[1].1.contains("not read"), "{replies:?}");
    let (_, list) = mm.api("GET", &format!("/api/tenants/{tenant}/addresses"), None);
    let addresses: Vec<&str> = list["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "noreply@inbound.test",
            "sales@inbound.test",
            "*@inbound.test"
        ]
    );

    // Delivered with swaks, byte for byte (see common::swaks_data).
    let message = b"From: Ann <ann@example.org>\r\nTo: sales@inbound.test\r\n\
        Subject: Quarterly numbers\r\nMessage-ID: <q3@example.org>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\r\nThe numbers.\r\n.leading dot\r\n";
    let dir = common::TestDir::new("inbound-msg");
    let file = dir.path().join("message.eml");
    std::fs::write(&file, common::swaks_data(message)).unwrap();
    let server = format!("127.0.0.1:{}", mx.port());
    let data = format!("@{}", file.display());
    let (ok, transcript) = common::swaks(&[
        "--server",
        &server,
        "--from",
        "ann@example.org",
        "--to",
        "sales+q3@inbound.test",
        "--no-data-fixup",
        "--data",
        &data,
    ]);
    assert!(ok, "{transcript}");
    let id = transcript
        .lines()
        .find_map(|l| l.split("queued as ").nth(1))
        .unwrap_or_else(|| panic!("no queue id: {transcript}"))
        .trim()
        .to_string();
    let (status, list) = mm.api("GET", &format!("/api/tenants/{tenant}/inbound"), None);
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["messages"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["messages"][0]["recipients"][0]["tag"], "q3");
    assert_eq!(list["messages"][0]["recipients"][0]["rule_id"], sales["id"]);
    let (status, parsed) = mm.api("GET", &format!("/api/tenants/{tenant}/inbound/{id}"), None);
    assert_eq!(status, 200, "{parsed}");
    assert_eq!(parsed["subject"], "Quarterly numbers");
    assert_eq!(parsed["from"][0]["address"], "ann@example.org");
    assert_eq!(parsed["mail_from"], "ann@example.org");
    assert!(parsed["text"].as_str().unwrap().contains(".leading dot"));
    let (status, raw) = common::http_raw(
        mm.admin(),
        &format!("/api/tenants/{tenant}/inbound/{id}/raw"),
        mm.admin_token(),
    );
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("Authentication-Results: ") && text.contains("\r\nReceived: "),
        "our verdicts and trace header in front: {text}"
    );
    assert!(
        raw.ends_with(message),
        "the message as sent, byte for byte:\n{}",
        String::from_utf8_lossy(&raw)
    );
    // Another tenant sees none of it.
    let other = mm.create_tenant("other", "professional");
    let (status, _) = mm.api("GET", &format!("/api/tenants/{other}/inbound/{id}"), None);
    assert_eq!(status, 404);
    // Stored mail counts towards storage usage.
    let (_, usage) = mm.api("GET", &format!("/api/tenants/{tenant}/usage"), None);
    assert_eq!(usage["usage"]["storage_mb"], 1, "{usage}");
}

#[test]
fn over_max_storage_store_rules_get_452() {
    if !common::require_support() {
        return;
    }
    let dns = dns(&[]);
    let mm = start(&dns);
    let tenant = inbound_tenant(&mm);
    rule(
        &mm,
        &tenant,
        json!({"address": "*@inbound.test", "action": "store"}),
    );
    let (status, body) = mm.api(
        "PUT",
        &format!("/api/tenants/{tenant}"),
        Some(json!({"max_storage_mb": 1})),
    );
    assert_eq!(status, 200, "{body}");
    // Fill the megabyte with one message, then the next RCPT is refused for now (452 4.2.2).
    let line = format!("{}\r\n", "x".repeat(76));
    let big = format!("Subject: big\r\n\r\n{}", line.repeat(14_000));
    let code = r#"
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=60)
s.sendmail("someone@example.org", ["a@inbound.test"], open(sys.argv[3], "rb").read())
s.quit()
"#;
    let dir = common::TestDir::new("inbound-big");
    let file = dir.path().join("big.eml");
    std::fs::write(&file, big).unwrap();
    let port = mm.mx().port().to_string();
    common::python_eval(code, &["127.0.0.1", &port, file.to_str().unwrap()]);
    let replies = rcpt_codes(mm.mx(), &["b@inbound.test"]);
    assert_eq!(replies[0].0, 452, "{replies:?}");
    assert!(replies[0].1.starts_with("4.2.2"), "{replies:?}");
}

/// Sends `message` from `from` to `to` over smtplib ([`common::mx_send`]).
fn send(mx: SocketAddr, from: &str, to: &str, message: &[u8]) -> (u16, String) {
    common::mx_send(mx, from, to, message)
}

#[test]
fn authentication_verdicts_are_prepended_and_dmarc_reject_is_enforced_when_asked() {
    if !common::require_support() || !common::require_python_module("dkim") {
        return;
    }
    // A key made here, published in the zone; messages signed by dkimpy with it.
    let signed: Value = serde_json::from_str(
        common::python_eval(
            r#"
import base64, json, dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                        serialization.NoEncryption())
pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
msg = (b"From: Ann <ann@sender.test>\r\nTo: sales@inbound.test\r\nSubject: signed\r\n"
       b"Message-ID: <s1@sender.test>\r\n\r\nSigned body.\r\n")
sig = dkim.sign(msg, b"sel", b"sender.test", pem, include_headers=[b"from", b"to", b"subject"])
good = sig + msg
broken = good.replace(b"Signed body.", b"Changed body.")
print(json.dumps({"pub": base64.b64encode(pub).decode(),
                  "good": base64.b64encode(good).decode(),
                  "broken": base64.b64encode(broken).decode()}))
"#,
            &[],
        )
        .trim(),
    )
    .unwrap();
    use base64::Engine;
    let b64 = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(signed[k].as_str().unwrap())
            .unwrap()
    };
    let dns = dns(
        &[json!({"name": "sel._domainkey.sender.test", "type": "TXT",
        "value": format!("v=DKIM1; k=rsa; p={}", signed["pub"].as_str().unwrap())})],
    );
    let mm = start(&dns);
    let tenant = inbound_tenant(&mm);
    rule(
        &mm,
        &tenant,
        json!({"address": "*@inbound.test", "action": "store"}),
    );
    let mx = mm.mx();
    let stored_header = |id: &str| -> String {
        let (status, raw) = common::http_raw(
            mm.admin(),
            &format!("/api/tenants/{tenant}/inbound/{id}/raw"),
            mm.admin_token(),
        );
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&raw).to_string();
        assert!(text.starts_with("Authentication-Results: "), "{text}");
        text[..text.find("\r\nReceived: ").unwrap()].to_string()
    };
    let queued = |reply: &(u16, String)| -> String {
        assert_eq!(reply.0, 250, "{reply:?}");
        reply.1.rsplit(' ').next().unwrap().to_string()
    };

    // Signed, from an SPF-authorised address: everything passes.
    let good = send(mx, "ann@sender.test", "sales@inbound.test", &b64("good"));
    let header = stored_header(&queued(&good));
    for want in [
        "dkim=pass",
        "header.i=@sender.test",
        "spf=pass",
        "dmarc=pass",
        "arc=none",
    ] {
        assert!(header.contains(want), "{want} in {header}");
    }
    // A signature broken in transit fails DKIM; SPF still passes, aligned, so DMARC passes.
    let broken = send(mx, "ann@sender.test", "sales@inbound.test", &b64("broken"));
    let header = stored_header(&queued(&broken));
    // mail-auth reports a body-hash mismatch as neutral (RFC 6376 §3.9 lets a verifier):
    // what matters is that it is no pass.
    assert!(!header.contains("dkim=pass"), "{header}");
    assert!(header.contains("body hash did not verify"), "{header}");
    assert!(header.contains("dmarc=pass"), "{header}");

    // From an address whose SPF fails under p=reject: accepted with the failure noted...
    let spoofed = b"From: Boss <boss@spoof.test>\r\nTo: sales@inbound.test\r\n\
        Subject: wire money\r\n\r\nNow.\r\n";
    let reply = send(mx, "boss@spoof.test", "sales@inbound.test", spoofed);
    let header = stored_header(&queued(&reply));
    assert!(header.contains("spf=fail"), "{header}");
    assert!(header.contains("dmarc=fail"), "{header}");
    assert!(header.contains("policy.dmarc=reject"), "{header}");
    // ...and refused at the end of DATA once the tenant asks for it on its domain.
    let (status, domain) = mm.api(
        "PUT",
        &format!("/api/tenants/{tenant}/domains/inbound.test"),
        Some(json!({"dmarc_reject": true})),
    );
    assert_eq!(status, 200, "{domain}");
    assert_eq!(domain["dmarc_reject"], true);
    let reply = send(mx, "boss@spoof.test", "sales@inbound.test", spoofed);
    assert_eq!(reply.0, 550, "{reply:?}");
    assert!(reply.1.starts_with("5.7.1"), "{reply:?}");
    // The good mail is still accepted.
    queued(&send(
        mx,
        "ann@sender.test",
        "sales@inbound.test",
        &b64("good"),
    ));

    // DNS cannot answer for now (its server is gone): 451 4.7.x at MAIL FROM, never a pass.
    drop(dns);
    let reply = send(mx, "ann@sender.test", "sales@inbound.test", &b64("good"));
    assert_eq!(reply.0, 451, "{reply:?}");
    assert!(reply.1.starts_with("4.7."), "{reply:?}");
}

#[test]
fn bounces_to_a_verified_return_path_are_accepted_and_kept() {
    if !common::require_support() {
        return;
    }
    let dns = dns(&[
        json!({"name": "bounce.rp.test", "type": "MX", "value": "10 localhost"}),
        json!({"name": "bounce.rp.test", "type": "TXT", "value": "v=spf1 a:localhost ~all"}),
    ]);
    let mm = start(&dns);
    let tenant = mm.create_tenant("rp", "professional");
    mm.add_verified_domain(&tenant, "rp.test");
    let path = format!("/api/tenants/{tenant}/domains/rp.test/return-path");
    let (status, body) = mm.api("PUT", &path, Some(json!({"return_path": "bounce.rp.test"})));
    assert!(status == 200 || status == 201, "{status} {body}");
    // Not verified yet: the MX refuses it like any domain it does not serve.
    let replies = rcpt_codes(mm.mx(), &["bounces+x1@bounce.rp.test"]);
    assert_eq!(replies[0].0, 550, "{replies:?}");
    assert!(replies[0].1.starts_with("5.7.1"), "{replies:?}");
    let (status, body) = mm.api("POST", &format!("{path}/verify"), None);
    assert_eq!(status, 200, "{body}");
    let dsn = b"From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+x1@bounce.rp.test\r\n\
        Subject: Undelivered Mail Returned to Sender\r\n\r\nuser unknown\r\n";
    let reply = send(mm.mx(), "", "bounces+x1@bounce.rp.test", dsn);
    assert_eq!(reply.0, 250, "{reply:?}");
    let (_, list) = mm.api("GET", &format!("/api/tenants/{tenant}/inbound"), None);
    let kept = &list["messages"][0];
    assert_eq!(kept["mail_from"], "", "{list}");
    assert_eq!(kept["recipients"][0]["bounce"], true, "{list}");
    assert_eq!(
        kept["recipients"][0]["address"],
        "bounces+x1@bounce.rp.test"
    );
}
