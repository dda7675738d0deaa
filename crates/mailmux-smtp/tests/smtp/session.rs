//! Sessions over `tokio::io::duplex`: every reply of the interface contract, the DATA/BDAT
//! data path, smuggling, pipelining, AUTH and its lockout, limits and timeouts.

use std::time::Duration;

use mailmux_core::{TenantStatus, now_ms};
use mailmux_smtp::{Listener, RejectReason};

use crate::support::*;

const PEER: &str = "192.0.2.10:50000";

fn has_line(reply: &Reply, line: &str) -> bool {
    reply.lines.iter().any(|l| l == line)
}

#[tokio::test]
async fn plain_submission_greets_offers_starttls_and_requires_auth_over_tls() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, PEER);
    c.reply()
        .await
        .expect_code(220)
        .expect_text(&format!("{HOSTNAME} ESMTP mailmux"));
    let ehlo = c.cmd("EHLO client.test").await;
    ehlo.expect_code(250);
    let size = format!("SIZE {MAX_SIZE}");
    for extension in [
        "PIPELINING",
        size.as_str(),
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(has_line(&ehlo, extension), "{extension} missing: {ehlo:?}");
    }
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered in the clear: {ehlo:?}"
    );
    c.cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(530, "5.7.0");
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(538, "5.7.11");
    c.cmd("QUIT").await.expect(221, "2.0.0");
    assert!(c.is_closed().await);
    assert_eq!(f.server.metrics().rejected(RejectReason::Auth), 2);
}

#[tokio::test]
async fn command_replies_follow_the_contract() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    // (command, code, enhanced status; None where the reply has none)
    let steps: &[(&str, u16, Option<&str>)] = &[
        ("MAIL FROM:<alice@acme.test>", 503, Some("5.5.1")),
        ("EHLO client.test", 250, None),
        ("RCPT TO:<bob@example.org>", 503, Some("5.5.1")),
        ("DATA", 503, Some("5.5.1")),
        ("BOGUS command", 500, Some("5.5.1")),
        ("MAIL FROM:alice@acme.test", 501, Some("5.5.4")),
        ("MAIL FROM:<alice@acme.test> SIZE=abc", 501, Some("5.5.4")),
        ("NOOP", 250, Some("2.0.0")),
        ("VRFY bob", 252, Some("2.5.0")),
        ("HELP", 214, Some("2.0.0")),
        ("LHLO client.test", 502, Some("5.5.1")),
        ("EXPN list", 502, Some("5.5.1")),
        ("MAIL FROM:<alice@acme.test>", 250, Some("2.1.0")),
        ("MAIL FROM:<alice@acme.test>", 503, Some("5.5.1")),
        ("DATA", 503, Some("5.5.1")),
        ("RCPT TO:<jörg@example.org>", 553, Some("5.6.7")),
        ("RCPT TO:<bob@example.org>", 250, Some("2.1.5")),
        ("RSET", 250, Some("2.0.0")),
        ("DATA", 503, Some("5.5.1")),
        ("MAIL FROM:<jörg@acme.test>", 553, Some("5.6.7")),
        ("MAIL FROM:<jörg@acme.test> SMTPUTF8", 250, Some("2.1.0")),
        ("RCPT TO:<jörg@example.org>", 250, Some("2.1.5")),
        ("RSET", 250, Some("2.0.0")),
        (
            "MAIL FROM:<alice@acme.test> BODY=BINARYMIME",
            555,
            Some("5.5.4"),
        ),
        ("HELO client.test", 250, None),
        ("AUTH PLAIN AGEAYg==", 538, Some("5.7.11")),
        ("QUIT", 221, Some("2.0.0")),
    ];
    for (command, code, status) in steps {
        let reply = c.cmd(command).await;
        match status {
            Some(status) => reply.expect(*code, status),
            None => reply.expect_code(*code),
        };
    }
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn command_lines_are_limited_to_512_bytes_and_must_be_utf8() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    let line = |len: usize| format!("NOOP {}", "x".repeat(len - "NOOP \r\n".len()));
    assert_eq!(line(512).len() + 2, 512);
    c.cmd(&line(512)).await.expect(250, "2.0.0");
    c.cmd(&line(513))
        .await
        .expect(500, "5.5.2")
        .expect_text("too long");
    // A much longer line, in pieces: one reply, then the session goes on.
    c.send("NOOP ").await;
    for _ in 0..10 {
        c.send("y".repeat(1000)).await;
    }
    c.send("\r\n").await;
    c.reply().await.expect(500, "5.5.2");
    c.send(b"NOOP \xff\xfe\r\n").await;
    c.reply().await.expect(500, "5.5.2").expect_text("UTF-8");
    c.cmd("NOOP").await.expect(250, "2.0.0");
}

#[tokio::test]
async fn sender_rights_are_checked_at_mail() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let cases: &[(&str, u16, &str, &str)] = &[
        (
            "MAIL FROM:<a@other.test>",
            550,
            "5.7.1",
            "other.test is not a domain of this account",
        ),
        (
            "MAIL FROM:<a@nowhere.test>",
            550,
            "5.7.1",
            "not a domain of this account",
        ),
        ("MAIL FROM:<a@pending.test>", 550, "5.7.1", "not verified"),
        (
            "MAIL FROM:<a@acme.test> SIZE=5000",
            552,
            "5.3.4",
            "too large",
        ),
    ];
    for (command, code, status, text) in cases {
        c.cmd(command).await.expect(*code, status).expect_text(text);
    }
    // Case does not matter; the null sender has no domain to check.
    for command in [
        "MAIL FROM:<a@ACME.Test> SIZE=4000 BODY=8BITMIME",
        "MAIL FROM:<>",
    ] {
        c.cmd(command).await.expect(250, "2.1.0");
        c.cmd("RSET").await.expect(250, "2.0.0");
    }
    assert_eq!(f.server.metrics().rejected(RejectReason::Sender), 3);
    assert_eq!(f.server.metrics().rejected(RejectReason::Size), 1);
}

#[tokio::test]
async fn tenant_status_bites_on_the_next_transaction() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    queued_id(
        &c.send_message(from, &["bob@example.org"], &message(from))
            .await,
    );
    let cases: [(TenantStatus, bool, &str, u16, &str); 4] = [
        (
            TenantStatus::Suspended,
            true,
            "abuse report 42",
            550,
            "5.7.1",
        ),
        (
            TenantStatus::Paused,
            true,
            "bounce rate too high",
            451,
            "4.7.1",
        ),
        (TenantStatus::Active, false, "unpaid invoice", 550, "5.7.1"),
        (TenantStatus::Active, true, "", 250, "2.1.0"),
    ];
    for (status, enabled, reason, code, enhanced) in cases {
        f.update_tenant(|t| {
            t.status = status;
            t.enabled = enabled;
            t.status_reason = Some(reason.to_string());
        })
        .await;
        let reply = c.cmd(&format!("MAIL FROM:<{from}>")).await;
        reply.expect(code, enhanced).expect_text(reason);
        c.cmd("RSET").await.expect(250, "2.0.0");
    }
}

#[tokio::test]
async fn daily_quota_and_recipient_limit() {
    let f = Fixture::new().await;
    f.update_tenant(|t| t.limits.max_messages_per_day = 1).await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    for n in 0..MAX_RECIPIENTS {
        c.cmd(&format!("RCPT TO:<r{n}@example.org>"))
            .await
            .expect(250, "2.1.5");
    }
    c.cmd("RCPT TO:<one-too-many@example.org>")
        .await
        .expect(452, "4.5.3");
    c.cmd("DATA").await.expect_code(354);
    c.send(format!("{}.\r\n", message(from))).await;
    queued_id(&c.reply().await);
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(451, "4.7.1")
        .expect_text("quota");
    assert_eq!(f.server.metrics().rejected(RejectReason::Quota), 1);
    assert_eq!(f.server.metrics().rejected(RejectReason::Recipients), 1);
}

#[tokio::test]
async fn accepted_message_is_durable_and_carries_a_received_header() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    let body = message(from);
    let id = queued_id(&c.send_message(from, &["bob@example.org"], &body).await);

    let stored = f
        .queue
        .load_pending(&id)
        .await
        .unwrap()
        .expect("the message is in the queue");
    assert_eq!(stored.tenant_id, f.tenant.id);
    assert_eq!(stored.mail_from, from);
    let recipients: Vec<&str> = stored
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(recipients, ["bob@example.org"]);
    let text = String::from_utf8(stored.body.to_vec()).unwrap();
    let received = format!(
        "Received: from client.test ([192.0.2.10])\r\n\tby {HOSTNAME} (mailmux) with ESMTPSA id {id}\r\n\tfor <bob@example.org>;\r\n\t"
    );
    assert!(text.starts_with(&received), "{text}");
    assert!(text.ends_with(&body), "{text}");
    assert_eq!(
        f.server
            .metrics()
            .messages_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn header_senders_must_be_the_tenants() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    let cases: &[(&str, Option<&str>)] = &[
        (
            "From: Mallory <ceo@other.test>\r\n",
            Some("not in a domain of this account"),
        ),
        (
            "From: a@acme.test\r\nSender: b@pending.test\r\n",
            Some("not verified"),
        ),
        (
            "From: a@acme.test\r\nFrom: ceo@other.test\r\n",
            Some("other.test"),
        ),
        (
            "From: a@acme.test, ceo@nowhere.test\r\n",
            Some("nowhere.test"),
        ),
        ("From: undisclosed\r\n", Some("no address")),
        ("From: A <a@Acme.Test>\r\nSender: b@acme.test\r\n", None),
        // No From: at all: accepted (applications do this).
        ("X-Mailer: app\r\n", None),
    ];
    for (headers, refused) in cases {
        let body = format!("{headers}Subject: t\r\n\r\nbody\r\n");
        let reply = c.send_message(from, &["bob@example.org"], &body).await;
        match refused {
            Some(text) => {
                reply.expect(550, "5.7.1").expect_text(text);
            }
            None => {
                queued_id(&reply);
            }
        }
    }
    assert_eq!(f.messages_today().await, 2);
}

#[tokio::test]
async fn oversized_messages_are_read_to_the_end_then_refused() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    let from = "alice@acme.test";
    let big = format!("{}{}", message(from), "0123456789abcdef\r\n".repeat(400));
    let reply = c.send_message(from, &["bob@example.org"], &big).await;
    reply.expect(552, "5.3.4");
    // Same with BDAT; then the session is still in step.
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "2.1.5");
    c.send(format!("BDAT {} LAST\r\n{big}", big.len())).await;
    c.reply().await.expect(552, "5.3.4");
    c.cmd("NOOP").await.expect(250, "2.0.0");
    assert_eq!(f.messages_today().await, 0);
}

#[tokio::test]
async fn smuggled_endings_never_end_data_in_chunks_of_every_size() {
    let f = Fixture::with_config(|c| c.smtp.max_idle_commands = 100_000).await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    let endings: [(&str, &str); 5] = [
        ("\n.\n", "bare LF"),
        ("\r\n.\r", "bare CR"),
        ("\n.\r\n", "bare LF"),
        ("\r\n.\0\r\n", "NUL"),
        ("\r\n.\r\r\n", "bare CR"),
    ];
    for (ending, problem) in endings {
        let data = format!(
            "From: alice@acme.test\r\n\r\nhello{ending}MAIL FROM:<evil@acme.test>\r\n\
             RCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n\r\n.\r\n"
        );
        let bytes = data.as_bytes();
        for size in 1..=bytes.len() {
            c.start_message("alice@acme.test", &["bob@example.org"])
                .await;
            for chunk in bytes.chunks(size) {
                c.send(chunk).await;
                tokio::task::yield_now().await;
            }
            c.reply().await.expect(554, "5.6.0").expect_text(problem);
            // Nothing smuggled ran: the next reply is this NOOP's.
            c.cmd("NOOP").await.expect(250, "2.0.0");
        }
    }
    assert_eq!(f.messages_today().await, 0);
}

#[tokio::test]
async fn data_is_dot_unstuffed() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    let from = "alice@acme.test";
    let sent = format!("{}..x\r\n...\r\n.\r\n", message(from));
    let reply = c.send_message(from, &["bob@example.org"], &sent).await;
    let id = queued_id(&reply);
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    let text = String::from_utf8(stored.body.to_vec()).unwrap();
    assert!(text.ends_with("Hello.\r\n.x\r\n..\r\n"), "{text:?}");
    // Trusted network, no AUTH, no TLS.
    assert!(text.contains("with ESMTP id"), "{text}");
}

#[tokio::test]
async fn bdat_chunks_make_one_message_and_do_not_mix_with_data() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    // A chunk without a transaction is read and refused, never run as commands.
    c.send("BDAT 6 LAST\r\nRSET\r\n").await;
    c.reply().await.expect(503, "5.5.1");
    c.cmd("VRFY x").await.expect(252, "2.5.0");

    let from = "alice@acme.test";
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "2.1.5");
    let first = message(from);
    let second = "not stuffed:\r\n.\r\n..\r\nend\r\n";
    c.send(format!("BDAT {}\r\n{first}", first.len())).await;
    c.reply().await.expect(250, "2.0.0");
    c.send(format!("BDAT {} LAST\r\n{second}", second.len()))
        .await;
    let id = queued_id(&c.reply().await);
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    let text = String::from_utf8(stored.body.to_vec()).unwrap();
    assert!(text.ends_with(&format!("{first}{second}")), "{text:?}");

    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "2.1.5");
    c.send("BDAT 5\r\nhello").await;
    c.reply().await.expect(250, "2.0.0");
    c.cmd("DATA").await.expect(503, "5.5.1");
    c.cmd("RSET").await.expect(250, "2.0.0");

    // RFC 3030's closing form: an empty last chunk.
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<bob@example.org>")
        .await
        .expect(250, "2.1.5");
    c.send(format!("BDAT {}\r\n{first}", first.len())).await;
    c.reply().await.expect(250, "2.0.0");
    let id = queued_id(&c.cmd("BDAT 0 LAST").await);
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    assert!(stored.body.ends_with(first.as_bytes()));
}

#[tokio::test]
async fn pipelined_commands_get_every_reply_in_order() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    let from = "alice@acme.test";
    c.send(format!(
        "MAIL FROM:<{from}>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
    ))
    .await;
    c.reply().await.expect(250, "2.1.0");
    c.reply().await.expect(250, "2.1.5");
    c.reply().await.expect(250, "2.1.5");
    c.reply().await.expect_code(354);
    c.send(format!(
        "{}.\r\nMAIL FROM:<{from}>\r\nRCPT TO:<d@example.org>\r\nQUIT\r\n",
        message(from)
    ))
    .await;
    let id = queued_id(&c.reply().await);
    c.reply().await.expect(250, "2.1.0");
    c.reply().await.expect(250, "2.1.5");
    c.reply().await.expect(221, "2.0.0");
    assert!(c.is_closed().await);
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    assert_eq!(stored.recipients.len(), 2);
    // Several recipients: none is named in Received:.
    let text = String::from_utf8(stored.body.to_vec()).unwrap();
    assert!(!text.contains("for <"), "{text}");
}

#[tokio::test]
async fn mx_never_relays_and_offers_no_auth() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    let ehlo = c.cmd("EHLO mta.example").await;
    assert!(has_line(&ehlo, "STARTTLS"), "{ehlo:?}");
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(503, "5.5.1");
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<user@elsewhere.example>")
        .await
        .expect(550, "5.7.1")
        .expect_text("Relaying denied");
    // A tenant's domain is served on MX only once inbound is turned on (tests/smtp/mx.rs).
    c.cmd("RCPT TO:<user@acme.test>").await.expect(550, "5.7.1");
    c.cmd("RCPT TO:<user@pending.test>")
        .await
        .expect(550, "5.7.1");
    c.cmd("DATA").await.expect(503, "5.5.1");
    assert_eq!(f.server.metrics().rejected(RejectReason::Relay), 3);
}

#[tokio::test]
async fn auth_plain_and_login_variants() {
    let f = Fixture::new().await;
    let cases: Vec<(Vec<String>, u16, &str)> = vec![
        (vec![auth_plain(&f.username, &f.password)], 235, "2.7.0"),
        (
            vec![
                "AUTH PLAIN".into(),
                auth_plain(&f.username, &f.password)["AUTH PLAIN ".len()..].into(),
            ],
            235,
            "2.7.0",
        ),
        (
            vec!["AUTH LOGIN".into(), b64(&f.username), b64(&f.password)],
            235,
            "2.7.0",
        ),
        (
            vec![format!("AUTH LOGIN {}", b64(&f.username)), b64(&f.password)],
            235,
            "2.7.0",
        ),
        (vec![auth_plain(&f.username, "wrong")], 535, "5.7.8"),
        (vec![auth_plain("nobody", &f.password)], 535, "5.7.8"),
        (vec!["AUTH LOGIN".into(), "*".into()], 501, "5.0.0"),
        (vec!["AUTH PLAIN !!!".into()], 501, "5.5.2"),
        (vec!["AUTH CRAM-MD5".into()], 504, "5.5.4"),
    ];
    for (n, (lines, code, status)) in cases.into_iter().enumerate() {
        // A fresh IP each time: the failures here must not add up to a lockout.
        let mut c = f.connect_tls(&format!("192.0.2.{}:1000", 100 + n)).await;
        let (last, steps) = lines.split_last().unwrap();
        for step in steps {
            c.cmd(step).await.expect_code(334);
        }
        c.cmd(last).await.expect(code, status);
        if code == 235 {
            c.cmd(&auth_plain(&f.username, &f.password))
                .await
                .expect(503, "5.5.1");
            c.cmd("MAIL FROM:<a@acme.test>").await.expect(250, "2.1.0");
        }
    }
}

#[tokio::test]
async fn revoked_credentials_stop_working_within_a_second() {
    let f = Fixture::new().await;
    f.authenticated(PEER).await;
    assert!(
        f.store
            .revoke_credential(&f.tenant.id, &f.credential_id, now_ms(), None)
            .await
            .unwrap()
    );
    skip_time(Duration::from_secs(1)).await;
    let mut c = f.connect_tls(PEER).await;
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(535, "5.7.8");
}

#[tokio::test]
async fn auth_failures_lock_the_username_out_from_that_address() {
    let f = Fixture::new().await;
    let mut c = f.connect_tls(PEER).await;
    for _ in 1..AUTH_FAILURE_LIMIT {
        c.cmd(&auth_plain(&f.username, "wrong"))
            .await
            .expect(535, "5.7.8");
    }
    c.cmd(&auth_plain(&f.username, "wrong"))
        .await
        .expect(421, "4.7.0");
    assert!(c.is_closed().await);
    // From that address the username is refused, even with its password, until the window
    // moves on; the address itself is not locked out (tests/smtp/submission.rs has the rest).
    let mut again = f.connect_tls(PEER).await;
    again
        .cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(421, "4.7.0");
    assert!(again.is_closed().await);
    let metrics = f.server.metrics();
    assert_eq!(
        metrics
            .auth_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        u64::from(AUTH_FAILURE_LIMIT)
    );
    assert_eq!(
        metrics
            .auth_lockouts
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn starttls_forgets_everything_and_then_offers_auth() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    c.cmd("STARTTLS").await.expect(220, "2.0.0");
    let mut c = Client::new(f.tls(c.into_inner()).await);
    // EHLO is forgotten.
    c.cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(503, "5.5.1");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(has_line(&ehlo, "AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!has_line(&ehlo, "STARTTLS"), "{ehlo:?}");
    c.cmd("STARTTLS").await.expect(503, "5.5.1");
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(235, "2.7.0");
    let from = "alice@acme.test";
    let id = queued_id(
        &c.send_message(from, &["bob@example.org"], &message(from))
            .await,
    );
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&stored.body).contains("with ESMTPSA id"));
}

#[tokio::test]
async fn too_many_idle_commands_close_the_session() {
    let f = Fixture::with_config(|c| c.smtp.max_idle_commands = 3).await;
    let mut c = f.connect(Listener::Submission, PEER);
    c.reply().await.expect_code(220);
    for _ in 0..3 {
        c.cmd("NOOP").await.expect(250, "2.0.0");
    }
    c.cmd("NOOP").await.expect(421, "4.7.0");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let f = Fixture::with_config(|c| c.smtp.max_connections_per_ip = 2).await;
    let mut first = f.connect(Listener::Submission, PEER);
    let mut second = f.connect(Listener::Submission, PEER);
    first.reply().await.expect_code(220);
    second.reply().await.expect_code(220);
    let mut third = f.connect(Listener::Submission, PEER);
    third.reply().await.expect(421, "4.7.0");
    assert!(third.is_closed().await);
    let mut elsewhere = f.connect(Listener::Submission, "192.0.2.77:1");
    elsewhere.reply().await.expect_code(220);
    // A place frees up when a session ends.
    first.cmd("QUIT").await.expect(221, "2.0.0");
    assert!(first.is_closed().await);
    let mut fourth = f.connect(Listener::Submission, PEER);
    fourth.reply().await.expect_code(220);
}

#[tokio::test]
async fn idle_clients_time_out() {
    let cases: [(u64, u64, &str); 2] = [(1, 60, "Timeout"), (60, 1, "Session time limit")];
    for (command_secs, session_secs, text) in cases {
        let f = Fixture::with_config(|c| {
            c.smtp.command_timeout_secs = command_secs;
            c.smtp.session_timeout_secs = session_secs;
        })
        .await;
        let mut c = f.connect(Listener::Submission, PEER);
        c.reply().await.expect_code(220);
        c.reply().await.expect(421, "4.4.2").expect_text(text);
        assert!(c.is_closed().await);
    }
}

#[tokio::test]
async fn over_long_header_lines_are_refused_after_the_end() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    let from = "alice@acme.test";
    // (A long body line is re-encoded instead: tests/smtp/submission.rs.)
    let body = format!("X-Long: {}\r\n{}", "x".repeat(999), message(from));
    c.send_message(from, &["bob@example.org"], &body)
        .await
        .expect(554, "5.6.0")
        .expect_text("longer than 998");
    c.cmd("NOOP").await.expect(250, "2.0.0");
    assert_eq!(f.server.metrics().rejected(RejectReason::Content), 1);
}

#[tokio::test]
async fn a_failed_enqueue_is_451_never_250() {
    let f = Fixture::new().await;
    let mut c = f.connect(Listener::Submission, TRUSTED_PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO client.test").await.expect_code(250);
    c.start_message("alice@acme.test", &["bob@example.org"])
        .await;
    // No From: header, so the end of data needs the store only for the commit, which now
    // fails.
    c.send("Subject: doomed\r\n\r\nbody\r\n").await;
    f.store.close().await;
    c.send(".\r\n").await;
    c.reply()
        .await
        .expect(451, "4.3.0")
        .expect_text("try again");
    assert_eq!(f.server.metrics().rejected(RejectReason::Storage), 1);
}
