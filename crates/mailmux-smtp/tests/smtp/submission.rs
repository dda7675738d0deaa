//! Issue 11 over real sessions: what a submission server owes the mail it accepts (RFC 6409:
//! Date: and Message-ID: added, over-long body lines re-encoded), what it owes a credential's
//! owner (revocation bites on open sessions; a lockout per username and address, not per
//! address), and what every listener owes a client (EHLO within the idle budget and without
//! store reads, 501 for malformed addresses).

use std::sync::atomic::Ordering;
use std::time::Duration;

use mail_parser::MessageParser;
use mailmux_core::now_ms;
use mailmux_smtp::{Listener, RejectReason};

use crate::support::*;

const PEER: &str = "192.0.2.30:50000";

/// The stored message of a `250 … queued as <id>` reply, as text.
async fn stored(f: &Fixture, reply: &Reply) -> String {
    let id = queued_id(reply);
    let stored = f.queue.load_pending(&id).await.unwrap().unwrap();
    String::from_utf8(stored.body.to_vec()).unwrap()
}

fn header_section(message: &str) -> &str {
    message.split("\r\n\r\n").next().unwrap()
}

#[tokio::test]
async fn submission_adds_a_missing_date_and_message_id() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    let text = stored(
        &f,
        &c.send_message(from, &["bob@example.org"], &bare_message(from))
            .await,
    )
    .await;
    let head = header_section(&text);
    let date = head
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .unwrap_or_else(|| panic!("no Date: added\n{text}"));
    assert!(
        mail_parser::DateTime::parse_rfc822(date).is_some(),
        "Date: {date:?} is not RFC 5322"
    );
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("no Message-ID: added\n{text}"));
    assert!(
        id.starts_with('<') && id.ends_with(&format!("@{HOSTNAME}>")),
        "{id}"
    );
    // The body is untouched, and the added fields are in the header section.
    assert!(text.ends_with("\r\n\r\nHello.\r\n"), "{text}");

    // A message that has both keeps its own, and gets no second one.
    let own = message(from);
    let text = stored(&f, &c.send_message(from, &["bob@example.org"], &own).await).await;
    assert!(text.ends_with(&own), "{text}");
    assert_eq!(text.matches("Date: ").count(), 1, "{text}");
    assert_eq!(text.matches("Message-ID: ").count(), 1, "{text}");
    // Two messages, two ids.
    let again = stored(
        &f,
        &c.send_message(from, &["bob@example.org"], &bare_message(from))
            .await,
    )
    .await;
    let id_of = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("Message-ID: "))
            .unwrap()
            .to_string()
    };
    let first = stored(
        &f,
        &c.send_message(from, &["bob@example.org"], &bare_message(from))
            .await,
    )
    .await;
    assert_ne!(id_of(&again), id_of(&first));
}

#[tokio::test]
async fn long_body_lines_are_reencoded_on_submission_and_header_lines_refused() {
    let f = Fixture::with_config(|c| c.smtp.max_message_size = 64 * 1024).await;
    let mut c = f.authenticated(PEER).await;
    let from = "alice@acme.test";
    let long = format!("{}é end", "0123456789 ".repeat(200));
    let body = format!(
        "From: <{from}>\r\nTo: <bob@example.org>\r\nSubject: long\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         short line\r\n{long}\r\n"
    );
    let reply = c
        .send_message(from, &["bob@example.org"], &body)
        .await
        .clone();
    let text = stored(&f, &reply).await;
    assert!(
        text.split("\r\n").all(|l| l.len() <= 998),
        "a line over 998 octets was stored"
    );
    assert!(
        text.contains("Content-Transfer-Encoding: quoted-printable\r\n")
            && !text.contains("Content-Transfer-Encoding: 8bit"),
        "{text}"
    );
    let parsed = MessageParser::new().parse(text.as_bytes()).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap(),
        format!("short line\r\n{long}\r\n")
    );

    // A header line over the limit cannot be re-encoded: refused, saying so.
    let header = format!(
        "From: <{from}>\r\nX-Long: {}\r\n\r\nbody\r\n",
        "x".repeat(1000)
    );
    c.send_message(from, &["bob@example.org"], &header)
        .await
        .expect(554, "5.6.0")
        .expect_text("header line");
    assert_eq!(f.server.metrics().rejected(RejectReason::Content), 1);
}

#[tokio::test]
async fn revoked_credential_is_refused_at_mail_on_an_open_session() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let mail = "MAIL FROM:<alice@acme.test>";
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");
    assert!(
        f.store
            .revoke_credential(&f.tenant.id, &f.credential_id, now_ms(), None)
            .await
            .unwrap()
    );
    // At most a second later (the credential cache's lifetime), without waiting for it.
    skip_time(Duration::from_secs(1)).await;
    c.cmd(mail)
        .await
        .expect(535, "5.7.8")
        .expect_text("no longer valid");
    assert!(c.is_closed().await, "the session must end");
    assert_eq!(f.server.metrics().rejected(RejectReason::Auth), 1);
}

#[tokio::test]
async fn a_credential_is_checked_at_mail_through_the_cache() {
    let f = Fixture::new().await;
    let mut c = f.authenticated(PEER).await;
    let mail = "MAIL FROM:<alice@acme.test>";
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");
    // Within the cache's second, MAIL does not ask the store for the credential: with the
    // credential revoked, it still passes (the revocation is seen once the second is over).
    assert!(
        f.store
            .revoke_credential(&f.tenant.id, &f.credential_id, now_ms(), None)
            .await
            .unwrap()
    );
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");
    // (The clock also runs on between the jumps: the first one leaves room for that.)
    skip_time(Duration::from_millis(300)).await;
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");
    skip_time(Duration::from_millis(700)).await;
    c.cmd(mail).await.expect(535, "5.7.8");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn auth_lockout_is_per_username_and_address_with_a_higher_limit_per_address() {
    let f = Fixture::new().await;
    let metrics = f.server.metrics();
    // One app behind a NAT with a wrong password: its username is locked out from there...
    let mut app = f.connect_tls(PEER).await;
    for _ in 1..AUTH_FAILURE_LIMIT {
        app.cmd(&auth_plain("u_wrong_app", "nope"))
            .await
            .expect(535, "5.7.8");
    }
    app.cmd(&auth_plain("u_wrong_app", "nope"))
        .await
        .expect(421, "4.7.0");
    assert!(app.is_closed().await);
    let mut again = f.connect_tls(PEER).await;
    again
        .cmd(&auth_plain("u_wrong_app", "nope"))
        .await
        .expect(421, "4.7.0")
        .expect_text("this username");
    assert!(again.is_closed().await);
    // ...but every other tenant behind the same address still gets in.
    let mut other = f.authenticated(PEER).await;
    other
        .cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(250, "2.1.0");
    // The locked username from another address is not locked.
    let mut elsewhere = f.connect_tls("192.0.2.31:1").await;
    elsewhere
        .cmd(&auth_plain("u_wrong_app", "nope"))
        .await
        .expect(535, "5.7.8");
    assert_eq!(metrics.auth_lockouts.load(Ordering::Relaxed), 2);

    // Spraying: many usernames from one address hit the per-address limit, and the address
    // is turned away at connect, whatever username it would try.
    let spray = "192.0.2.32:1";
    let mut failures = 0;
    let mut n = 0;
    'spray: loop {
        let mut c = f.connect_tls(spray).await;
        for _ in 1..AUTH_FAILURE_LIMIT {
            n += 1;
            let reply = c.cmd(&auth_plain(&format!("u_spray_{n}"), "nope")).await;
            failures += 1;
            if reply.code == 421 {
                reply.expect_text("your address");
                break 'spray;
            }
            reply.expect(535, "5.7.8");
        }
        assert!(failures < 100, "no per-address lockout");
    }
    assert_eq!(failures, AUTH_FAILURE_IP_LIMIT);
    let mut turned_away = f.connect(Listener::Submission, spray);
    turned_away.reply().await.expect(421, "4.7.0");
    assert_eq!(metrics.auth_lockouts.load(Ordering::Relaxed), 4);

    // The window moves on: the pair and the address may try again.
    skip_time(Duration::from_secs(61)).await;
    let mut later = f.connect_tls(PEER).await;
    later
        .cmd(&auth_plain("u_wrong_app", "nope"))
        .await
        .expect(535, "5.7.8");
    let mut later = f.connect_tls(spray).await;
    later
        .cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(235, "2.7.0");
}

#[tokio::test]
async fn ehlo_counts_against_the_idle_budget_and_reads_the_store_once() {
    let f = Fixture::with_config(|c| c.smtp.max_idle_commands = 20).await;
    f.update_tenant(|t| t.limits.max_message_size = 1024).await;
    let mut c = f.authenticated(PEER).await;
    let size = |reply: &Reply| {
        reply
            .lines
            .iter()
            .find(|l| l.starts_with("SIZE "))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(size(&c.cmd("EHLO client.test").await), "SIZE 1024");
    // With the store gone, EHLO answers from what the session knows: had it read the store,
    // the failed read would advertise the relay's limit instead of the tenant's.
    f.store.close().await;
    let mut answered = 2; // the EHLOs of connect_tls and above
    loop {
        let reply = c.cmd("EHLO client.test").await;
        if reply.code == 421 {
            reply.expect(421, "4.7.0").expect_text("without mail");
            break;
        }
        assert_eq!(size(&reply), "SIZE 1024");
        answered += 1;
        assert!(answered <= 100, "EHLO is outside the idle budget");
    }
    assert_eq!(answered, 20);
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn malformed_addresses_get_501_on_every_listener() {
    let f = Fixture::new().await;
    let senders = [
        "<user@>",
        "<@>",
        "<@acme.test>",
        "<user@-bad-.example>",
        "<a b@x.example>",
        "<user@acme..test>",
        "<user@[300.1.1.1]>",
    ];
    let recipients = ["<user@>", "<@>", "<bob@-bad-.example>", "<a b@x.example>"];
    let mut sessions = vec![
        (Listener::Mx, f.connect(Listener::Mx, PEER)),
        (
            Listener::Submission,
            f.connect(Listener::Submission, TRUSTED_PEER),
        ),
    ];
    for (listener, c) in &mut sessions {
        c.reply().await.expect_code(220);
        c.cmd("EHLO client.test").await.expect_code(250);
        for sender in senders {
            c.cmd(&format!("MAIL FROM:{sender}"))
                .await
                .expect(501, "5.1.7");
        }
        let ok_sender = match listener {
            Listener::Mx => "<someone@example.org>",
            _ => "<alice@acme.test>",
        };
        c.cmd(&format!("MAIL FROM:{ok_sender}"))
            .await
            .expect(250, "2.1.0");
        for rcpt in recipients {
            c.cmd(&format!("RCPT TO:{rcpt}")).await.expect(501, "5.1.3");
        }
        c.cmd("RSET").await.expect(250, "2.0.0");
        // Well-formed edge cases pass the syntax check (what happens next is policy's).
        c.cmd("MAIL FROM:<>").await.expect(250, "2.1.0");
        c.cmd("RSET").await.expect(250, "2.0.0");
    }
    let mut submission = sessions.pop().unwrap().1;
    submission
        .cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(250, "2.1.0");
    submission
        .cmd("RCPT TO:<first.last+tag@xn--bcher-kva.example>")
        .await
        .expect(250, "2.1.5");
    assert!(f.server.metrics().rejected(RejectReason::Protocol) >= 22);
}
