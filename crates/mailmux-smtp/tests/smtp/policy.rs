//! Issue 4's per-tenant policy over real sessions: recipients and size per tenant (and SIZE in
//! EHLO after AUTH), rates per tenant and per credential, sessions per tenant, and the daily
//! quota held exactly by the queue's commit when many sessions pass MAIL at once.

use std::sync::Arc;
use std::time::Duration;

use mailmux_smtp::{Listener, RejectReason};
use tokio::sync::Barrier;

use crate::support::*;

const PEER: &str = "192.0.2.20:50000";

fn size_line(reply: &Reply) -> String {
    reply
        .lines
        .iter()
        .find(|l| l.starts_with("SIZE "))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn recipients_and_size_are_the_tenants_under_the_relays() {
    let f = Fixture::new().await;
    f.update_tenant(|t| {
        t.limits.max_recipients_per_message = 2;
        t.limits.max_message_size = 1024;
    })
    .await;
    let mut c = f.connect_tls(PEER).await;
    // Before AUTH: the relay's limit.
    let ehlo = c.cmd("EHLO client.test").await;
    assert_eq!(size_line(&ehlo), format!("SIZE {MAX_SIZE}"));
    c.cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(235, "2.7.0");
    // After AUTH: the tenant's.
    assert_eq!(size_line(&c.cmd("EHLO client.test").await), "SIZE 1024");

    let from = "alice@acme.test";
    c.cmd(&format!("MAIL FROM:<{from}> SIZE=2000"))
        .await
        .expect(552, "5.3.4")
        .expect_text("1024");
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<a@example.org>").await.expect(250, "2.1.5");
    c.cmd("RCPT TO:<b@example.org>").await.expect(250, "2.1.5");
    c.cmd("RCPT TO:<c@example.org>")
        .await
        .expect(452, "4.5.3")
        .expect_text("at most 2");
    c.cmd("DATA").await.expect_code(354);
    let big = format!("{}{}", message(from), "0123456789abcdef\r\n".repeat(80));
    c.send(format!("{big}.\r\n")).await;
    c.reply().await.expect(552, "5.3.4");

    // Limits lifted: the relay's caps remain (3 recipients, MAX_SIZE bytes). EHLO shows the
    // limit as the session last read it, which the next MAIL does.
    f.update_tenant(|t| {
        t.limits.max_recipients_per_message = 0;
        t.limits.max_message_size = 1_000_000;
    })
    .await;
    assert_eq!(size_line(&c.cmd("EHLO client.test").await), "SIZE 1024");
    c.cmd(&format!("MAIL FROM:<{from}>"))
        .await
        .expect(250, "2.1.0");
    assert_eq!(
        size_line(&c.cmd("EHLO client.test").await),
        format!("SIZE {MAX_SIZE}")
    );
    queued_id(
        &c.send_message(
            from,
            &["a@example.org", "b@example.org", "c@example.org"],
            &big,
        )
        .await,
    );
    assert_eq!(f.server.metrics().rejected(RejectReason::Size), 2);
    assert_eq!(f.server.metrics().rejected(RejectReason::Recipients), 1);
}

#[tokio::test]
async fn rates_bite_per_tenant_and_per_credential() {
    let f = Fixture::new().await;
    f.update_tenant(|t| t.limits.rate_per_second = 2).await;
    let mut c = f.authenticated(PEER).await;
    let mail = "MAIL FROM:<alice@acme.test>";
    for _ in 0..2 {
        c.cmd(mail).await.expect(250, "2.1.0");
        c.cmd("RSET").await.expect(250, "2.0.0");
    }
    c.cmd(mail)
        .await
        .expect(451, "4.7.1")
        .expect_text("rate")
        .expect_text("2 messages per second");
    assert_eq!(f.server.metrics().rejected(RejectReason::Rate), 1);
    // Half a second on, one more message of the 2 per second is allowed.
    skip_time(Duration::from_millis(500)).await;
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");

    // The credential's own rate, on top of an unlimited tenant; seen within a second.
    f.update_tenant(|t| t.limits.rate_per_second = 0).await;
    assert!(
        f.store
            .set_credential_rates(&f.tenant.id, &f.credential_id, None, Some(1), None)
            .await
            .unwrap()
    );
    // The credential as cached at AUTH is a second old at most: past that, MAIL sees the rate.
    skip_time(Duration::from_secs(1)).await;
    c.cmd(mail).await.expect(250, "2.1.0");
    c.cmd("RSET").await.expect(250, "2.0.0");
    c.cmd(mail)
        .await
        .expect(451, "4.7.1")
        .expect_text("1 messages per minute for this credential");
    // The trusted network acts as the tenant without the credential: not limited by it.
    let mut trusted = f.connect(Listener::Submission, TRUSTED_PEER);
    trusted.reply().await.expect_code(220);
    trusted.cmd("EHLO client.test").await.expect_code(250);
    trusted.cmd(mail).await.expect(250, "2.1.0");
}

#[tokio::test]
async fn sessions_per_tenant_are_limited() {
    let f = Fixture::new().await;
    f.update_tenant(|t| t.limits.max_connections = 1).await;
    let mut first = f.authenticated(PEER).await;
    let mut second = f.connect_tls("192.0.2.21:50000").await;
    second
        .cmd(&auth_plain(&f.username, &f.password))
        .await
        .expect(421, "4.7.0")
        .expect_text("at most 1");
    assert!(second.is_closed().await);
    assert_eq!(f.server.metrics().rejected(RejectReason::Connection), 1);
    // The first session works, and its place is free once it ends.
    first
        .cmd("MAIL FROM:<alice@acme.test>")
        .await
        .expect(250, "2.1.0");
    first.cmd("QUIT").await.expect_code(221);
    assert!(first.is_closed().await);
    let mut third = f.authenticated("192.0.2.22:50000").await;
    third.cmd("NOOP").await.expect(250, "2.0.0");
    // 0: no limit.
    f.update_tenant(|t| t.limits.max_connections = 0).await;
    let _more = f.authenticated("192.0.2.23:50000").await;
}

#[tokio::test]
async fn daily_quota_holds_exactly_when_many_sessions_pass_mail_at_once() {
    const SESSIONS: usize = 20;
    const QUOTA: u64 = 7;
    let f = Arc::new(Fixture::new().await);
    f.update_tenant(|t| t.limits.max_messages_per_day = QUOTA)
        .await;
    // Every session has passed MAIL (the quota is untouched then) before any sends its
    // message: only the check inside the queue's commit can keep the count at the quota.
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for n in 0..SESSIONS {
        let (f, barrier) = (f.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = f.authenticated(&format!("192.0.2.{}:5000", 100 + n)).await;
            let from = "alice@acme.test";
            c.start_message(from, &["bob@example.org"]).await;
            barrier.wait().await;
            c.send(format!("{}.\r\n", message(from))).await;
            c.reply().await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.code {
            250 => accepted += 1,
            _ => {
                reply.expect(451, "4.7.1").expect_text("quota");
            }
        }
    }
    assert_eq!(accepted, QUOTA, "exactly the quota accepted");
    assert_eq!(f.messages_today().await, QUOTA, "and exactly that counted");
    assert_eq!(
        f.server.metrics().rejected(RejectReason::Quota),
        SESSIONS as u64 - QUOTA
    );
}
