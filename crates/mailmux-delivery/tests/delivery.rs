//! End to end on loopback: real SQLite store and queue, the real deliverer, an authoritative
//! DNS server and receiving SMTP servers written in the test (see `support/`).

mod support;

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mailmux_core::{TransportKind, now_ms};
use support::dns::{DnsServer, Zone};
use support::sink::{Script, Sink, listeners_on_one_port, self_signed_tls};
use support::{EIGHT_BIT, Harness, SEVEN_BIT, config};

/// A message with every shape transparency and 8-bit handling can get wrong.
const TRICKY: &[u8] = b"From: Alice <alice@sender.test>\r\n\
To: bob@dest.test\r\n\
Subject: dots and bytes\r\n\
\r\n\
.leading dot\r\n\
..two dots\r\n\
.\r\n\
h\xc3\xa9llo, raw \xff byte\r\n\
\r\n\
last line\r\n";

fn dest_zone() -> Zone {
    Zone::default()
        .mx("dest.test", 10, "mx.dest.test")
        .a("mx.dest.test", "127.0.0.2")
}

#[tokio::test]
async fn delivers_exact_bytes_and_reuses_one_connection() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(listeners.remove(0), Script::default()).await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;

    let first = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test", "carol@dest.test"],
            TRICKY,
            EIGHT_BIT,
        )
        .await;
    let states = harness.attempted(&first.0).await;
    for state in &states {
        assert_eq!(state.status, "delivered", "{state:?}");
        assert!(state.reply.starts_with("250 2.0.0"), "{state:?}");
    }

    let received = sink.received();
    assert_eq!(received.len(), 1, "one transaction for one domain");
    assert_eq!(received[0].data, TRICKY, "bytes must arrive unchanged");
    assert_eq!(received[0].rcpt_to, ["bob@dest.test", "carol@dest.test"]);
    assert_eq!(
        received[0].mail_from,
        "MAIL FROM:<alice@sender.test> BODY=8BITMIME"
    );

    // The second message to the domain takes the idle connection: RSET, not a new TCP one.
    let second = harness
        .send(
            "alice@sender.test",
            &["dave@dest.test"],
            b"Subject: again\r\n\r\nplain\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&second.0).await;
    assert_eq!(states[0].status, "delivered", "{states:?}");
    let received = sink.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].mail_from, "MAIL FROM:<alice@sender.test>");
    assert_eq!(received[1].data, b"Subject: again\r\n\r\nplain\r\n");
    assert_eq!(sink.connections(), 1, "the connection must be reused");
    assert_eq!(received[1].connection, 1);
    assert!(sink.commands().iter().any(|c| c == "RSET"));
    assert!(harness.dsns().await.is_empty());
}

#[tokio::test]
async fn bare_line_feeds_go_out_as_crlf_and_are_dot_stuffed() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(listeners.remove(0), Script::default()).await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;
    // `\n.\n` is the SMTP smuggling shape: sent as it is, a lenient server would end the
    // data there and read what follows as commands.
    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test"],
            b"Subject: lf\n\nbefore\n.\nMAIL FROM:<evil@x>\nafter",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "delivered", "{states:?}");
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&received[0].data),
        "Subject: lf\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@x>\r\nafter\r\n"
    );
    assert_eq!(
        sink.commands()
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .count(),
        1,
        "{:?}",
        sink.commands()
    );
}

#[tokio::test]
async fn dns_answers_too_big_for_udp_are_fetched_over_tcp() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(listeners.remove(0), Script::default()).await;
    let dns = DnsServer::start(dest_zone().truncate_udp()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;
    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "delivered", "{states:?}");
    assert!(
        dns.tcp_queries() >= 2,
        "MX and A over TCP: {}",
        dns.tcp_queries()
    );
}

#[tokio::test]
async fn rejected_recipient_gets_a_dsn_while_the_others_are_delivered() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2", "127.0.0.3"]).await;
    let dest = Sink::start(
        listeners.remove(0),
        Script::default().rcpt("bob@dest.test", "550 5.1.1 <bob@dest.test>: user unknown"),
    )
    .await;
    // The sender's own MX defers everything, so the DSN stays queued with its body.
    let sender_mx = Sink::start(
        listeners.remove(0),
        Script {
            default_rcpt: "451 4.7.1 try again later".into(),
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(
        dest_zone()
            .mx("sender.test", 10, "mx.sender.test")
            .a("mx.sender.test", "127.0.0.3"),
    )
    .await;
    let harness = Harness::start(config(dns.addr, dest.addr.port())).await;

    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test", "carol@dest.test"],
            TRICKY,
            EIGHT_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].address, "bob@dest.test");
    assert_eq!(states[0].status, "bounced");
    assert_eq!(states[0].reply, "550 5.1.1 <bob@dest.test>: user unknown");
    assert_eq!(states[1].address, "carol@dest.test");
    assert_eq!(states[1].status, "delivered");
    let received = dest.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, ["carol@dest.test"]);
    assert_eq!(received[0].data, TRICKY);

    // The DSN: a new message from the null sender to the original sender, same tenant.
    let dsns = harness.dsns().await;
    assert_eq!(dsns.len(), 1, "{dsns:?}");
    let dsn = &dsns[0];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.tenant_id, harness.tenant);
    let dsn_states = harness.attempted(&dsn.id).await;
    assert_eq!(dsn_states.len(), 1);
    assert_eq!(dsn_states[0].address, "alice@sender.test");
    assert_eq!(dsn_states[0].status, "pending");
    assert!(
        sender_mx.commands().iter().any(|c| c == "MAIL FROM:<>"),
        "{:?}",
        sender_mx.commands()
    );

    let pending = harness.queue.load_pending(&dsn.id).await.unwrap().unwrap();
    let body = pending.body.as_slice();
    let message = MessageParser::default().parse(body).unwrap();
    assert_eq!(
        message.from().unwrap().first().unwrap().address(),
        Some("MAILER-DAEMON@relay.mailmux.test")
    );
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("alice@sender.test")
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let content_type = message.content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("report"))
    );
    assert_eq!(
        content_type.attribute("report-type"),
        Some("delivery-status")
    );
    let PartType::Multipart(children) = &message.parts[0].body else {
        panic!("DSN is not multipart");
    };
    assert_eq!(children.len(), 3);
    let status_part = &message.parts[children[1] as usize];
    assert_eq!(
        status_part.content_type().unwrap().subtype(),
        Some("delivery-status")
    );
    let status = String::from_utf8_lossy(status_part.contents()).replace("\r\n ", " ");
    assert!(
        status.contains("Reporting-MTA: dns; relay.mailmux.test"),
        "{status}"
    );
    assert!(
        status.contains("Final-Recipient: rfc822; bob@dest.test"),
        "{status}"
    );
    assert!(status.contains("Action: failed"), "{status}");
    assert!(status.contains("Status: 5.1.1"), "{status}");
    assert!(status.contains("Remote-MTA: dns; mx.dest.test"), "{status}");
    assert!(
        status.contains("Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.test>: user unknown"),
        "{status}"
    );
    assert!(
        !status.contains("carol"),
        "delivered recipients are not listed: {status}"
    );
    let headers = String::from_utf8_lossy(message.parts[children[2] as usize].contents());
    assert!(headers.contains("Subject: dots and bytes"), "{headers}");
}

#[tokio::test]
async fn temporary_failure_is_deferred_with_a_retry_in_the_future() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(
        listeners.remove(0),
        Script::default().rcpt("bob@dest.test", "451 4.2.0 <bob@dest.test>: mailbox busy"),
    )
    .await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;

    let before = now_ms();
    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "pending");
    assert_eq!(states[0].attempts, 1);
    assert_eq!(states[0].reply, "451 4.2.0 <bob@dest.test>: mailbox busy");
    let row = harness.message(&id.0).await;
    assert_eq!(row.status, "queued");
    // retry_initial_secs = 300: the next attempt is minutes away, not now.
    assert!(
        row.next_attempt_at >= before + 290_000,
        "next_attempt_at {} is not in the future",
        row.next_attempt_at
    );
    assert!(
        sink.received().is_empty(),
        "no DATA without an accepted RCPT"
    );
    assert!(!sink.commands().iter().any(|c| c == "DATA"));
    assert!(harness.dsns().await.is_empty(), "no DSN for a deferral");
}

#[tokio::test]
async fn eight_bit_mail_to_a_server_without_8bitmime_bounces() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(
        listeners.remove(0),
        Script {
            extensions: vec!["ENHANCEDSTATUSCODES".into()],
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;

    let id = harness
        .send("alice@sender.test", &["bob@dest.test"], TRICKY, EIGHT_BIT)
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "bounced", "{states:?}");
    assert!(states[0].reply.starts_with("554 5.6.3 "), "{states:?}");
    assert!(
        states[0].reply.contains("does not support 8BITMIME"),
        "{states:?}"
    );
    assert!(
        !sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "nothing is sent: {:?}",
        sink.commands()
    );
    // The sender hears about it (its domain does not exist, so the DSN itself bounces,
    // and that bounce is not bounced again).
    let dsns = harness.dsns().await;
    assert_eq!(dsns.len(), 1);

    // A message whose flags say nothing, but whose bytes are 8-bit, is treated the same.
    let id = harness
        .send("alice@sender.test", &["carol@dest.test"], TRICKY, SEVEN_BIT)
        .await;
    let states = harness.attempted(&id.0).await;
    assert!(states[0].reply.starts_with("554 5.6.3 "), "{states:?}");
}

#[tokio::test]
async fn smtputf8_mail_to_a_server_without_smtputf8_bounces() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(
        listeners.remove(0),
        Script {
            extensions: vec!["8BITMIME".into()],
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;
    let id = harness
        .send(
            "",
            &["jörg@dest.test"],
            "Subject: grüße\r\n\r\nhi\r\n".as_bytes(),
            mailmux_core::BodyFlags {
                eight_bit: true,
                smtputf8: true,
            },
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "bounced");
    assert!(states[0].reply.starts_with("553 5.6.7 "), "{states:?}");
    assert!(states[0].reply.contains("does not support SMTPUTF8"));
}

/// One message to many domains from the null sender: each domain is its own transaction,
/// each DNS situation gets its rule, and the bounced ones produce no DSN.
#[tokio::test]
async fn mx_rules_per_domain_and_no_bounce_for_the_null_sender() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2", "127.0.0.3"]).await;
    let good = Sink::start(listeners.remove(0), Script::default()).await;
    let closing = Sink::start(
        listeners.remove(0),
        Script {
            greeting: "421 4.3.2 mx1.busy.test closing".into(),
            ..Script::default()
        },
    )
    .await;
    let zone = Zone::default()
        // Primary refuses connections (nothing listens on 127.0.0.9), backup works.
        .mx("backup.test", 10, "dead.backup.test")
        .mx("backup.test", 20, "mx.backup.test")
        .a("dead.backup.test", "127.0.0.9")
        .a("mx.backup.test", "127.0.0.2")
        // Primary answers 421; the next MX takes the mail.
        .mx("busy.test", 10, "mx1.busy.test")
        .mx("busy.test", 20, "mx2.busy.test")
        .a("mx1.busy.test", "127.0.0.3")
        .a("mx2.busy.test", "127.0.0.2")
        // No MX: the domain's own address.
        .a("implicit.test", "127.0.0.2")
        .mx("nullmx.test", 0, ".")
        .servfail("broken.test");
    let dns = DnsServer::start(zone).await;
    let harness = Harness::start(config(dns.addr, good.addr.port())).await;

    let id = harness
        .send(
            "",
            &[
                "a@backup.test",
                "b@busy.test",
                "c@implicit.test",
                "d@nullmx.test",
                "e@nowhere.test",
                "f@broken.test",
            ],
            b"Subject: many\r\n\r\nbody\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    let by_address = |address: &str| {
        states
            .iter()
            .find(|s| s.address == address)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_address("a@backup.test").status,
        "delivered",
        "{states:#?}"
    );
    assert_eq!(by_address("b@busy.test").status, "delivered", "{states:#?}");
    assert_eq!(
        by_address("c@implicit.test").status,
        "delivered",
        "{states:#?}"
    );
    let null_mx = by_address("d@nullmx.test");
    assert_eq!(null_mx.status, "bounced");
    assert!(null_mx.reply.starts_with("556 5.1.10 "), "{null_mx:?}");
    let nowhere = by_address("e@nowhere.test");
    assert_eq!(nowhere.status, "bounced");
    assert!(nowhere.reply.starts_with("550 5.1.2 "), "{nowhere:?}");
    assert!(nowhere.reply.contains("does not exist"), "{nowhere:?}");
    let broken = by_address("f@broken.test");
    assert_eq!(broken.status, "pending");
    assert!(broken.reply.starts_with("451 4.4.3 "), "{broken:?}");

    // Three domains, three transactions, each with only its own recipient.
    let mut delivered: Vec<Vec<String>> = good.received().into_iter().map(|r| r.rcpt_to).collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [["a@backup.test"], ["b@busy.test"], ["c@implicit.test"]]
    );
    assert_eq!(closing.connections(), 1, "the 421 host was tried first");
    assert!(
        harness.dsns().await.is_empty(),
        "never a DSN for a null-sender message"
    );
}

#[tokio::test]
async fn all_hosts_failing_defers_with_the_reason() {
    let zone = Zone::default()
        .mx("down.test", 10, "mx.down.test")
        .a("mx.down.test", "127.0.0.9");
    let dns = DnsServer::start(zone).await;
    // Nothing listens on this port at 127.0.0.9.
    let port = listeners_on_one_port(&["127.0.0.9"])
        .await
        .remove(0)
        .local_addr()
        .unwrap()
        .port();
    let harness = Harness::start(config(dns.addr, port)).await;
    let id = harness
        .send(
            "alice@sender.test",
            &["x@down.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "pending");
    assert!(states[0].reply.starts_with("451 4.4."), "{states:?}");
    assert!(
        states[0].reply.contains("mx.down.test[127.0.0.9]"),
        "{states:?}"
    );
    assert!(harness.dsns().await.is_empty());
}

#[tokio::test]
async fn a_silent_server_times_out_and_the_next_mx_is_tried() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2", "127.0.0.3"]).await;
    // Accepts connections and never says a word.
    let silent = listeners.remove(0);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let good = Sink::start(listeners.remove(0), Script::default()).await;
    let zone = Zone::default()
        .mx("slow.test", 10, "mx1.slow.test")
        .a("mx1.slow.test", "127.0.0.2")
        .mx("slow.test", 20, "mx2.slow.test")
        .a("mx2.slow.test", "127.0.0.3");
    let dns = DnsServer::start(zone).await;
    let mut config = config(dns.addr, good.addr.port());
    config.delivery.connect_timeout_secs = 1;
    config.delivery.command_timeout_secs = 1;
    let harness = Harness::start(config).await;
    let started = std::time::Instant::now();
    let id = harness
        .send(
            "alice@sender.test",
            &["x@slow.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "delivered", "{states:?}");
    assert_eq!(good.received().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dead_pooled_connection_is_replaced_without_a_failure() {
    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(
        listeners.remove(0),
        Script {
            close_after_data: true,
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;
    for n in 0..2 {
        let id = harness
            .send(
                "alice@sender.test",
                &["bob@dest.test"],
                format!("Subject: {n}\r\n\r\nx\r\n").as_bytes(),
                SEVEN_BIT,
            )
            .await;
        let states = harness.attempted(&id.0).await;
        assert_eq!(states[0].status, "delivered", "message {n}: {states:?}");
        assert_eq!(states[0].attempts, 1, "message {n}: {states:?}");
        // The sink closed the connection (and its close reached us) before the next message.
        sink.wait_closed(n + 1).await;
    }
    assert_eq!(sink.received().len(), 2);
    assert_eq!(sink.connections(), 2);
}

#[tokio::test]
async fn smarthost_per_tenant_with_starttls_and_auth() {
    let mut listeners = listeners_on_one_port(&["127.0.0.1"]).await;
    let relay = Sink::start(
        listeners.remove(0),
        Script {
            tls: Some(self_signed_tls()),
            auth: Some(("relay-user".into(), "s3cret".into())),
            ..Script::default()
        },
    )
    .await;
    // An empty zone: were the mail routed by MX, every domain would bounce as nonexistent.
    let dns = DnsServer::start(Zone::default()).await;
    let mut config = config(dns.addr, 25);
    config.delivery.smarthost = Some(relay.addr.to_string());
    config.delivery.smarthost_user = Some("relay-user".into());
    config.delivery.smarthost_password = Some("s3cret".into());
    config.delivery.smarthost_tls = mailmux_core::SmarthostTls::Opportunistic;
    let harness = Harness::start_with(config, |tenant| {
        tenant.transport = Some(TransportKind::Smarthost);
    })
    .await;

    let id = harness
        .send(
            "alice@sender.test",
            &["a@one.test", "b@two.test"],
            TRICKY,
            EIGHT_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert!(
        states.iter().all(|s| s.status == "delivered"),
        "{states:#?}"
    );
    let received = relay.received();
    assert_eq!(
        received.len(),
        1,
        "all domains in one transaction to the relay"
    );
    assert_eq!(received[0].rcpt_to, ["a@one.test", "b@two.test"]);
    assert!(received[0].tls, "STARTTLS was offered and must be used");
    assert_eq!(received[0].auth_user.as_deref(), Some("relay-user"));
    assert_eq!(received[0].data, TRICKY);
    assert_eq!(dns.queries(), 0, "the smarthost route asks no MX");
}

#[tokio::test]
async fn smarthost_required_tls_refuses_an_unverifiable_certificate() {
    let mut listeners = listeners_on_one_port(&["127.0.0.1"]).await;
    let relay = Sink::start(
        listeners.remove(0),
        Script {
            tls: Some(self_signed_tls()),
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(Zone::default()).await;
    let mut config = config(dns.addr, 25);
    config.delivery.transport = TransportKind::Smarthost;
    config.delivery.smarthost = Some(relay.addr.to_string());
    config.delivery.smarthost_tls = mailmux_core::SmarthostTls::Starttls;
    let harness = Harness::start(config).await;
    let id = harness
        .send(
            "alice@sender.test",
            &["a@one.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "pending", "{states:?}");
    assert!(states[0].reply.starts_with("451 4.7.5 "), "{states:?}");
    assert!(states[0].reply.contains("STARTTLS"), "{states:?}");
    assert!(
        !relay.commands().iter().any(|c| c.starts_with("MAIL")),
        "no mail over an unverified session: {:?}",
        relay.commands()
    );
}

#[tokio::test]
async fn smarthost_implicit_tls_is_verified_from_the_first_byte() {
    let mut listeners = listeners_on_one_port(&["127.0.0.1"]).await;
    let relay = Sink::start(
        listeners.remove(0),
        Script {
            implicit_tls: Some(self_signed_tls()),
            ..Script::default()
        },
    )
    .await;
    let dns = DnsServer::start(Zone::default()).await;
    let mut config = config(dns.addr, 25);
    config.delivery.transport = TransportKind::Smarthost;
    config.delivery.smarthost = Some(relay.addr.to_string());
    config.delivery.smarthost_tls = mailmux_core::SmarthostTls::Tls;
    let harness = Harness::start(config).await;
    let id = harness
        .send(
            "alice@sender.test",
            &["a@one.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "pending", "{states:?}");
    assert!(states[0].reply.starts_with("451 4.7.5 "), "{states:?}");
    assert!(states[0].reply.contains("certificate"), "{states:?}");
    assert_eq!(relay.tls_failures(), 1, "a TLS handshake, refused by us");
    assert!(relay.commands().is_empty(), "{:?}", relay.commands());
}

#[tokio::test]
async fn smarthost_credentials_never_go_in_clear_unless_tls_is_off() {
    for (mode, delivered) in [
        (mailmux_core::SmarthostTls::Opportunistic, false),
        (mailmux_core::SmarthostTls::None, true),
    ] {
        let mut listeners = listeners_on_one_port(&["127.0.0.1"]).await;
        let relay = Sink::start(
            listeners.remove(0),
            Script {
                auth: Some(("u".into(), "p".into())),
                ..Script::default()
            },
        )
        .await;
        let dns = DnsServer::start(Zone::default()).await;
        let mut config = config(dns.addr, 25);
        config.delivery.transport = TransportKind::Smarthost;
        config.delivery.smarthost = Some(relay.addr.to_string());
        config.delivery.smarthost_user = Some("u".into());
        config.delivery.smarthost_password = Some("p".into());
        config.delivery.smarthost_tls = mode;
        let harness = Harness::start(config).await;
        let id = harness
            .send(
                "alice@sender.test",
                &["a@one.test"],
                b"Subject: x\r\n\r\nx\r\n",
                SEVEN_BIT,
            )
            .await;
        let states = harness.attempted(&id.0).await;
        let sent_auth = relay.commands().iter().any(|c| c.starts_with("AUTH"));
        if delivered {
            assert_eq!(states[0].status, "delivered", "{mode:?}: {states:?}");
            assert!(sent_auth);
        } else {
            assert_eq!(states[0].status, "pending", "{mode:?}: {states:?}");
            assert!(states[0].reply.contains("without TLS"), "{states:?}");
            assert!(!sent_auth, "credentials went out in clear");
        }
    }
}

#[tokio::test]
async fn ses_tenants_wait_with_a_clear_reason() {
    let dns = DnsServer::start(dest_zone()).await;
    let harness = Harness::start_with(config(dns.addr, 25), |tenant| {
        tenant.transport = Some(TransportKind::Ses);
    })
    .await;
    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    let states = harness.attempted(&id.0).await;
    assert_eq!(states[0].status, "pending");
    assert!(states[0].reply.starts_with("451 4.3.5 "), "{states:?}");
    assert!(states[0].reply.contains("SES"), "{states:?}");
}
