//! The SES transport end to end: the real `mailmux serve` relaying a tenant's mail through SES
//! v2 at a loopback endpoint (tests/support/ses_recorder.py).
//!
//! These run against FakeSES, the named fake of the SES v2 wire format (paths, JSON bodies,
//! `x-amzn-ErrorType` errors): throttling and a tenant whose sending SES stopped are what
//! ministack does not emulate, and FakeSES records each SendEmail's exact body, which
//! ministack does not keep.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Mailmux, SesRecorder, TestTenant, http, submit_smtplib};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// mailmux on `ses`, retrying after a second and syncing SES tenants every second.
fn start(ses: &SesRecorder) -> Mailmux {
    let env = ses.env();
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.push(("MAILMUX_DELIVERY__RETRY_INITIAL_SECS", "1"));
    all.push(("MAILMUX_DELIVERY__RETRY_JITTER", "0.0"));
    all.push(("MAILMUX_SES__SYNC_INTERVAL_SECS", "1"));
    Mailmux::start(&all)
}

/// A starter tenant (it DKIM-signs) on the `ses` transport.
fn ses_tenant(mm: &Mailmux, name: &str, domain: &str) -> TestTenant {
    let tenant = mm.setup_tenant(name, "starter", domain);
    let (status, body) = http(
        mm.admin(),
        "PUT",
        &format!("/api/tenants/{}", tenant.id),
        Some(mm.admin_token()),
        Some(&json!({"transport": "ses"})),
    );
    assert_eq!(status, 200, "{body}");
    tenant
}

/// Submits `message` to `to`; the queue id.
fn submit(mm: &Mailmux, tenant: &TestTenant, to: &[&str], message: &[u8]) -> String {
    let from = format!("app@{}", tenant.domain);
    let reply = submit_smtplib(
        mm.submission(),
        &tenant.username,
        &tenant.password,
        &from,
        to,
        message,
        false,
    );
    assert_eq!(reply["code"], 250, "{reply}");
    reply["text"]
        .as_str()
        .and_then(|t| t.rsplit(' ').next())
        .unwrap()
        .to_string()
}

/// `GET path` on the admin API as the operator; the body.
fn get(mm: &Mailmux, path: &str) -> Value {
    let (status, body) = http(mm.admin(), "GET", path, Some(mm.admin_token()), None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn message_view(mm: &Mailmux, tenant: &str, id: &str) -> Value {
    get(mm, &format!("/api/tenants/{tenant}/messages/{id}"))
}

fn wait_for_status(mm: &Mailmux, tenant: &str, id: &str, want: &str) -> Value {
    common::wait_until(WAIT, || {
        let shown = message_view(mm, tenant, id);
        (shown["status"] == want).then_some(shown)
    })
    .unwrap_or_else(|| {
        panic!(
            "message {id} never became {want}: {}\n{}",
            message_view(mm, tenant, id),
            mm.log_tail(30)
        )
    })
}

fn raw_of(send: &Value) -> Vec<u8> {
    let data = send["Content"]["Raw"]["Data"]
        .as_str()
        .expect("Content.Raw.Data");
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("Raw.Data is base64")
}

/// (header, body) of a raw message, split at the first empty line.
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header/body separator");
    (&raw[..at + 2], &raw[at + 4..])
}

fn eight_bit_message(domain: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@{domain}>\r\nTo: someone@example.net\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — 8-bit body.\r\n"
    )
    .into_bytes()
}

#[test]
fn ses_sends_the_exact_bytes_with_tenant_name_and_configuration_set() {
    if !common::require_support() {
        return;
    }
    let ses = SesRecorder::fake();
    let mm = start(&ses);
    let tenant = ses_tenant(&mm, "acme", "acme-ses.test");
    // 60 recipients: SES takes 50 per send, so two sends.
    let recipients: Vec<String> = (0..60).map(|n| format!("r{n}@example.net")).collect();
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let body = eight_bit_message(&tenant.domain, "hello");
    let id = submit(&mm, &tenant, &to, &body);

    let shown = wait_for_status(&mm, &tenant.id, &id, "delivered");
    let sends = ses.sends();
    assert_eq!(sends.len(), 2, "{sends:?}");
    let mut destinations: Vec<String> = Vec::new();
    for send in &sends {
        assert_eq!(send["TenantName"], format!("mm-{}", tenant.id));
        assert_eq!(send["ConfigurationSetName"], format!("mm-{}", tenant.id));
        assert_eq!(send["FromEmailAddress"], format!("app@{}", tenant.domain));
        let raw = raw_of(send);
        // What SMTP would carry: mailmux's DKIM signature and Received: field on top of the
        // submitted message, byte for byte (the 8-bit body untouched).
        assert!(
            raw.starts_with(b"DKIM-Signature:"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        // Submission completes the header (Message-ID:, Date:) and keeps everything else: each
        // submitted field is there, and the 8-bit body is the submitted one byte for byte.
        let (head, text) = split_message(&raw);
        let (sent_head, sent_text) = split_message(&body);
        assert_eq!(text, sent_text, "{}", String::from_utf8_lossy(&raw));
        for field in sent_head.split(|b| *b == b'\n').filter(|f| !f.is_empty()) {
            assert!(
                head.windows(field.len()).any(|w| w == field),
                "{} missing from {}",
                String::from_utf8_lossy(field),
                String::from_utf8_lossy(head)
            );
        }
        assert!(String::from_utf8_lossy(head).contains("\r\nReceived: "));
        let to = send["Destination"]["ToAddresses"].as_array().unwrap();
        destinations.extend(to.iter().map(|a| a.as_str().unwrap().to_string()));
    }
    assert_eq!(
        sends[0]["Destination"]["ToAddresses"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
    assert_eq!(
        raw_of(&sends[0]),
        raw_of(&sends[1]),
        "both halves carry the same bytes"
    );
    destinations.sort();
    let mut want = recipients.clone();
    want.sort();
    assert_eq!(destinations, want);
    // SES's MessageId is kept per recipient and shown in the message history.
    let first = &shown["recipients"][0];
    let remote = first["remote_message_id"]
        .as_str()
        .expect("remote_message_id");
    assert!(remote.ends_with("@email.amazonses.com"), "{shown}");
    assert!(
        first["last_reply"].as_str().unwrap().contains(remote),
        "{shown}"
    );
}

/// FakeSES answering the first SendEmail with SES error `code` (400, `message`), mailmux, a
/// tenant `name` on `ses` (domain `NAME-ses.test`), and the queue id of one message it sent.
fn first_send_fails(
    code: &str,
    message: &str,
    name: &str,
) -> (SesRecorder, Mailmux, TestTenant, String) {
    let ses = SesRecorder::fake();
    ses.fail("/v2/email/outbound-emails", 400, code, message, 1);
    let mm = start(&ses);
    let tenant = ses_tenant(&mm, name, &format!("{name}-ses.test"));
    let id = submit(
        &mm,
        &tenant,
        &["one@example.net"],
        &eight_bit_message(&tenant.domain, name),
    );
    (ses, mm, tenant, id)
}

#[test]
fn throttling_defers_and_the_retry_delivers_once() {
    if !common::require_support() {
        return;
    }
    let (ses, mm, tenant, id) = first_send_fails(
        "TooManyRequestsException",
        "Maximum sending rate exceeded.",
        "busy",
    );
    let shown = wait_for_status(&mm, &tenant.id, &id, "delivered");
    assert_eq!(
        shown["attempts"], 2,
        "throttled once, then delivered: {shown}"
    );
    assert_eq!(ses.sends().len(), 2, "one throttled send, one accepted");
    let history = get(&mm, &format!("/api/tenants/{}/messages/{id}", tenant.id));
    let text = history.to_string();
    assert!(text.contains("TooManyRequestsException"), "{history}");
}

#[test]
fn message_rejected_bounces_with_the_reason_in_the_dsn() {
    if !common::require_support() {
        return;
    }
    let (ses, mm, tenant, id) = first_send_fails(
        "MessageRejected",
        "Email address is not verified: nobody@acme",
        "rejected",
    );
    let shown = wait_for_status(&mm, &tenant.id, &id, "bounced");
    let reply = shown["recipients"][0]["last_reply"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reply.starts_with("554 5.7.1"), "{reply}");
    assert!(reply.contains("Email address is not verified"), "{reply}");
    // The DSN goes back to the sender through the tenant's transport: SES again.
    let dsn = common::wait_until(WAIT, || {
        ses.sends().into_iter().map(|s| raw_of(&s)).find(|raw| {
            String::from_utf8_lossy(raw).contains("Undelivered Mail Returned to Sender")
        })
    })
    .unwrap_or_else(|| panic!("no DSN sent: {}", mm.log_tail(30)));
    let dsn = String::from_utf8_lossy(&dsn);
    assert!(dsn.contains("Email address is not verified"), "{dsn}");
    assert!(dsn.contains("one@example.net"), "{dsn}");
}

#[test]
fn a_tenant_stopped_by_ses_is_paused_and_its_mail_held() {
    if !common::require_support() {
        return;
    }
    let ses = SesRecorder::fake();
    let mm = start(&ses);
    let tenant = ses_tenant(&mm, "stopped", "stopped-ses.test");
    ses.set_tenant_status(&format!("mm-{}", tenant.id), "DISABLED");
    let id = submit(
        &mm,
        &tenant,
        &["one@example.net"],
        &eight_bit_message(&tenant.domain, "s"),
    );

    let paused = common::wait_until(WAIT, || {
        let t = get(&mm, &format!("/api/tenants/{}", tenant.id));
        (t["status"] == "paused").then_some(t)
    })
    .unwrap_or_else(|| panic!("tenant not paused: {}", mm.log_tail(30)));
    // Paused by whichever saw it first: the send (SendingPausedException, with SES's words)
    // or the periodic sync (GetTenant's SendingStatus).
    let reason = paused["status_reason"].as_str().unwrap();
    assert!(
        (reason.contains("SendingPausedException") && reason.contains("reputation review"))
            || reason.contains("SES disabled the tenant's sending (SendingStatus: DISABLED)"),
        "{paused}"
    );
    // Held, not bounced: still queued, no attempt counted.
    common::wait_until(WAIT, || {
        mm.log()
            .contains("held: the tenant is not active")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not held: {}", mm.log_tail(30)));
    let shown = message_view(&mm, &tenant.id, &id);
    assert_eq!(shown["status"], "queued", "{shown}");
    assert_eq!(shown["attempts"], 0, "{shown}");

    // SES enables the tenant again: the sync resumes it and the held mail goes, once.
    ses.set_tenant_status(&format!("mm-{}", tenant.id), "ENABLED");
    wait_for_status(&mm, &tenant.id, &id, "delivered");
    let t = get(&mm, &format!("/api/tenants/{}", tenant.id));
    assert_eq!(t["status"], "active", "{t}");
    let accepted: Vec<Value> = ses
        .sends()
        .into_iter()
        .filter(|s| s["TenantName"] == format!("mm-{}", tenant.id))
        .collect();
    assert!(!accepted.is_empty());
}

#[test]
fn mail_waits_until_ses_verifies_the_domain_for_sending() {
    if !common::require_support() {
        return;
    }
    let ses = SesRecorder::fake();
    ses.set_identity_verified(None, false);
    let mm = start(&ses);
    let tenant = ses_tenant(&mm, "unverified", "unverified-ses.test");
    let domain_path = format!("/api/tenants/{}/domains/{}", tenant.id, tenant.domain);
    common::wait_until(WAIT, || {
        let d = get(&mm, &domain_path);
        (d["ses"]["verified_for_sending"] == false).then_some(())
    })
    .unwrap_or_else(|| panic!("no SES identity shown: {}", mm.log_tail(30)));
    let id = submit(
        &mm,
        &tenant,
        &["one@example.net"],
        &eight_bit_message(&tenant.domain, "v"),
    );
    common::wait_until(WAIT, || {
        let shown = message_view(&mm, &tenant.id, &id);
        shown
            .to_string()
            .contains("SES has not verified unverified-ses.test for sending yet")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not held for SES: {}", message_view(&mm, &tenant.id, &id)));
    assert!(
        ses.sends().is_empty(),
        "nothing sent before SES verified the domain"
    );

    // SES verifies it: the next sync says so, and the retry sends it, once.
    ses.set_identity_verified(Some(&tenant.domain), true);
    wait_for_status(&mm, &tenant.id, &id, "delivered");
    assert_eq!(ses.sends().len(), 1);
    let d = get(&mm, &domain_path);
    assert_eq!(d["ses"]["dkim_status"], "SUCCESS", "{d}");
}
