//! Every log line about a message names it (`queue_id`) and its tenant, and failures name
//! the remote host and its reply. Its own test binary: the subscriber is process-global.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use mailmux_core::sync::lock;
use support::dns::{DnsServer, Zone};
use support::sink::{Script, Sink, listeners_on_one_port};
use support::{Harness, SEVEN_BIT, config};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_name_the_message_the_tenant_and_the_remote() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let mut listeners = listeners_on_one_port(&["127.0.0.2"]).await;
    let sink = Sink::start(
        listeners.remove(0),
        Script::default().rcpt("bob@dest.test", "550 5.1.1 <bob@dest.test>: user unknown"),
    )
    .await;
    let dns = DnsServer::start(
        Zone::default()
            .mx("dest.test", 10, "dead.dest.test")
            .a("dead.dest.test", "127.0.0.9")
            .mx("dest.test", 20, "mx.dest.test")
            .a("mx.dest.test", "127.0.0.2"),
    )
    .await;
    let harness = Harness::start(config(dns.addr, sink.addr.port())).await;
    let id = harness
        .send(
            "alice@sender.test",
            &["bob@dest.test", "carol@dest.test"],
            b"Subject: x\r\n\r\nx\r\n",
            SEVEN_BIT,
        )
        .await;
    harness.attempted(&id.0).await;

    let text = String::from_utf8(lock(&captured.0).clone()).unwrap();
    // The DSN this attempt queues is a message too, with lines of its own.
    let delivery_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("mailmux_delivery"))
        .collect();
    for line in &delivery_lines {
        assert!(line.contains("queue_id="), "{line}");
        assert!(
            line.contains(&format!("tenant={}", harness.tenant)),
            "{line}"
        );
    }
    let about_message: Vec<&str> = delivery_lines
        .iter()
        .copied()
        .filter(|l| l.contains(&format!("queue_id={}", id.0)))
        .collect();
    assert!(about_message.len() >= 4, "{text}");
    let failed_host = about_message
        .iter()
        .find(|l| l.contains("trying the next"))
        .unwrap_or_else(|| panic!("no line for the dead MX host: {text}"));
    assert!(
        failed_host.contains("dead.dest.test[127.0.0.9]"),
        "{failed_host}"
    );
    let bounced = about_message
        .iter()
        .find(|l| l.contains("bounced") && l.contains("bob@dest.test"))
        .unwrap_or_else(|| panic!("no bounce line: {text}"));
    assert!(bounced.contains("host=\"mx.dest.test\""), "{bounced}");
    assert!(bounced.contains("550 5.1.1"), "{bounced}");
}
