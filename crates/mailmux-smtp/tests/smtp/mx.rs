//! The MX listener with receipt rules: which recipients it accepts (rules, precedence,
//! plus-addressing, postmaster), every relay trick refused as relaying, a `reject` rule's text,
//! the storage limit, smuggling endings refused as on submission, and a stored message that is
//! in the database, byte for byte, when the client hears 250.

use mailmux_core::credential::random_id;
use mailmux_core::{ReceiptRule, RuleAction, now_ms};
use mailmux_smtp::{Listener, RejectReason};

use crate::support::*;

const PEER: &str = "198.51.100.7:40000";

impl Fixture {
    /// Turns inbound on for acme.test and adds a rule.
    async fn rule(&self, local: &str, action: RuleAction, text: Option<&str>) -> String {
        self.store
            .set_domain_inbound(&self.tenant.id, DOMAIN, true, None)
            .await
            .unwrap();
        let id = random_id("r_", 12);
        self.store
            .create_receipt_rule(
                &ReceiptRule {
                    id: id.clone(),
                    tenant_id: self.tenant.id.clone(),
                    domain: DOMAIN.into(),
                    local_part: local.into(),
                    action,
                    reject_text: text.map(str::to_string),
                    forward_to: Vec::new(),
                    members: Vec::new(),
                    created_at: now_ms(),
                    updated_at: now_ms(),
                },
                None,
            )
            .await
            .unwrap();
        id
    }
}

#[tokio::test]
async fn relay_tricks_are_refused_as_relaying_and_unknown_users_as_unknown() {
    let f = Fixture::with_config(|c| c.smtp.max_recipients = 100).await;
    f.rule("sales", RuleAction::Store, None).await;
    f.rule(
        "closed",
        RuleAction::Reject,
        Some("This desk has moved to help@acme.test"),
    )
    .await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    let relay = [
        "user@example.net",
        "USER@EXAMPLE.NET",
        "user%example.net@acme.test",
        "sales%example.net@acme.test",
        "example.net!user@acme.test",
        "example.net!user",
        "\"user@example.net\"@acme.test",
        "user@[127.0.0.1]",
        "user@[IPv6:::1]",
        "sales@acme.test.",
        // The source route is dropped (RFC 5321 §C): what is left is a foreign address.
        "@acme.test:user@example.net",
        // Another tenant's domain, verified but without inbound.
        "user@other.test",
    ];
    for address in relay {
        c.cmd(&format!("RCPT TO:<{address}>"))
            .await
            .expect(550, "5.7.1")
            .expect_text("Relaying denied");
    }
    c.cmd("RCPT TO:<bob@acme.test>").await.expect(550, "5.1.1");
    // A source route towards one of our own addresses is ignored: the mail stays here.
    c.cmd("RCPT TO:<@example.net:sales@acme.test>")
        .await
        .expect(250, "2.1.5");
    c.cmd("RCPT TO:<closed@acme.test>")
        .await
        .expect(550, "5.7.1")
        .expect_text("This desk has moved");
    assert_eq!(
        f.server.metrics().rejected(RejectReason::Relay),
        relay.len() as u64 + 2
    );
}

#[tokio::test]
async fn accepted_mail_is_stored_before_250_with_tags_and_postmaster() {
    let f = Fixture::new().await;
    let sales = f.rule("sales", RuleAction::Store, None).await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    // Mixed case and a +tag: the rule for sales@ matches, the tag is kept.
    c.cmd("RCPT TO:<Sales+Q3@Acme.TEST>")
        .await
        .expect(250, "2.1.5");
    // postmaster@ a served domain is accepted without a rule.
    c.cmd("RCPT TO:<postmaster@acme.test>")
        .await
        .expect(250, "2.1.5");
    c.cmd("DATA").await.expect_code(354);
    let body =
        "From: someone@example.org\r\nTo: sales@acme.test\r\nSubject: q3\r\n\r\nNumbers.\r\n";
    c.send(format!("{body}.\r\n")).await;
    let id = queued_id(&c.reply().await);
    // Durable when acknowledged: the row is there as soon as the 250 is read.
    let stored = f
        .store
        .get_inbound(&f.tenant.id, &id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.raw.starts_with(b"Received: "), "trace header first");
    assert!(stored.raw.ends_with(body.as_bytes()), "the message as sent");
    assert_eq!(stored.mail_from, "someone@example.org");
    let recipients: serde_json::Value = serde_json::from_str(&stored.recipients).unwrap();
    assert_eq!(recipients[0]["address"], "Sales+Q3@Acme.TEST");
    assert_eq!(recipients[0]["rule_id"], sales.as_str());
    assert_eq!(recipients[0]["tag"], "q3");
    assert_eq!(recipients[1]["rule_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn catch_all_takes_what_individual_rules_do_not() {
    let f = Fixture::new().await;
    f.rule("*", RuleAction::Store, None).await;
    f.rule("noreply", RuleAction::Reject, None).await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<anyone@acme.test>")
        .await
        .expect(250, "2.1.5");
    // The individual rule wins over the catch-all, whatever was made first.
    c.cmd("RCPT TO:<noreply@acme.test>")
        .await
        .expect(550, "5.7.1")
        .expect_text("refused");
    c.cmd("RCPT TO:<noreply+x@acme.test>")
        .await
        .expect(550, "5.7.1");
}

#[tokio::test]
async fn over_the_storage_limit_store_rules_get_452() {
    let f = Fixture::new().await;
    f.rule("sales", RuleAction::Store, None).await;
    f.update_tenant(|t| t.limits.max_storage_mb = 1).await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    c.start_message("someone@example.org", &["sales@acme.test"])
        .await;
    c.send("Subject: x\r\n\r\nsmall\r\n.\r\n").await;
    queued_id(&c.reply().await);
    // Fill the tenant's megabyte directly, then the next RCPT is refused for now.
    let big = mailmux_store::InboundMessage {
        id: random_id("big_", 8),
        tenant_id: f.tenant.id.clone(),
        mail_from: String::new(),
        recipients: "[]".into(),
        size: 1024 * 1024,
        raw: vec![b'x'; 16],
        received_at: now_ms(),
    };
    f.store.store_inbound(&[big]).await.unwrap();
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    c.cmd("RCPT TO:<sales@acme.test>")
        .await
        .expect(452, "4.2.2");
}

#[tokio::test]
async fn mx_clients_are_rate_limited_per_ip() {
    let f = Fixture::with_config(|c| c.smtp.mx_rate_per_minute = 2).await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    for _ in 0..2 {
        c.cmd("MAIL FROM:<someone@example.org>")
            .await
            .expect(250, "2.1.0");
        c.cmd("RSET").await.expect(250, "2.0.0");
    }
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(451, "4.7.1")
        .expect_text("per minute");
    // Another address has its own allowance.
    let mut other = f.connect(Listener::Mx, "198.51.100.8:40000");
    other.reply().await.expect_code(220);
    other.cmd("EHLO mta.example.org").await.expect_code(250);
    other
        .cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
    // A minute later the first one may send again.
    skip_time(std::time::Duration::from_secs(60)).await;
    c.cmd("MAIL FROM:<someone@example.org>")
        .await
        .expect(250, "2.1.0");
}

#[tokio::test]
async fn smuggled_endings_are_refused_on_mx_too() {
    let f = Fixture::new().await;
    f.rule("sales", RuleAction::Store, None).await;
    let mut c = f.connect(Listener::Mx, PEER);
    c.reply().await.expect_code(220);
    c.cmd("EHLO mta.example.org").await.expect_code(250);
    for (ending, problem) in [
        ("\n.\n", "bare LF"),
        ("\r\n.\r", "bare CR"),
        ("\r\n.\0\r\n", "NUL"),
    ] {
        c.start_message("someone@example.org", &["sales@acme.test"])
            .await;
        c.send(format!(
            "Subject: x\r\n\r\nhello{ending}MAIL FROM:<evil@example.org>\r\n\
             RCPT TO:<sales@acme.test>\r\nDATA\r\nsmuggled\r\n\r\n.\r\n"
        ))
        .await;
        c.reply().await.expect(554, "5.6.0").expect_text(problem);
        c.cmd("NOOP").await.expect(250, "2.0.0");
    }
    let stored = f.store.list_inbound(&f.tenant.id, None, 10).await.unwrap();
    assert!(stored.is_empty(), "nothing stored: {stored:?}");
}
