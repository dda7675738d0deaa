//! Smoke tests of the test harness itself, independent of the relay: the DNS server answers,
//! the sink keeps what a real client sent byte for byte and fails on command, Python's smtplib
//! client reports what happened, and the private Postgres cluster takes connections.

mod common;

use std::time::Duration;

use common::{
    DnsServer, Sink, postgres_url, psql, python_eval, require_support, require_tool, smtplib_burst,
    submit_smtplib, submit_smtplib_args, swaks, swaks_data, swaks_status,
};
use serde_json::{Value, json};

/// Asks the DNS server with dnslib's client (an independent implementation of the wire format):
/// each query is `[name, type, "udp"|"tcp"]`; returns one report per query.
fn ask(dns: &DnsServer, queries: Value) -> Vec<Value> {
    let code = r#"
import json, sys
from dnslib import DNSRecord, QTYPE, RCODE
port, queries = int(sys.argv[1]), json.loads(sys.argv[2])
out = []
for name, qtype, proto in queries:
    q = DNSRecord.question(name, qtype)
    r = DNSRecord.parse(q.send("127.0.0.1", port, tcp=(proto == "tcp"), timeout=5))
    answers = []
    for a in r.rr:
        if QTYPE[a.rtype] == "TXT":
            data = b"".join(a.rdata.data).decode()
            chunks = [len(c) for c in a.rdata.data]
        else:
            data, chunks = str(a.rdata), None
        answers.append({"type": QTYPE[a.rtype], "data": data, "chunks": chunks})
    out.append({"rcode": RCODE[r.header.rcode], "aa": r.header.aa, "tc": r.header.tc,
                "answers": answers})
print(json.dumps(out))
"#;
    let out = python_eval(code, &[&dns.port().to_string(), &queries.to_string()]);
    serde_json::from_str(&out).expect("dns client output")
}

#[test]
fn dns_server_answers_mx_a_txt_and_follows_zone_edits() {
    if !require_support() {
        return;
    }
    // A 2048-bit RSA DKIM key is ~400 bytes of base64: longer than one TXT string, and with
    // this padding the answer no longer fits a plain 512-byte UDP reply.
    let dkim = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
    let dns = DnsServer::start(json!([
        {"name": "example.test", "type": "MX", "value": "10 mx.example.test"},
        {"name": "mx.example.test", "type": "A", "value": "127.0.0.1"},
        {"name": "example.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"},
        {"name": "s1._domainkey.example.test", "type": "TXT", "value": dkim},
    ]));
    assert_eq!(dns.addr().ip().to_string(), "127.0.0.1");

    let r = ask(
        &dns,
        json!([
            ["example.test", "MX", "udp"],
            ["mx.example.test", "A", "udp"],
            ["example.test", "TXT", "tcp"],
            ["nope.example.test", "A", "udp"],
            ["mx.example.test", "MX", "udp"],
            ["s1._domainkey.example.test", "TXT", "udp"],
            ["s1._domainkey.example.test", "TXT", "tcp"],
        ]),
    );
    assert_eq!(r[0]["rcode"], "NOERROR");
    assert_eq!(r[0]["aa"], 1, "authoritative: {}", r[0]);
    assert_eq!(r[0]["answers"][0]["data"], "10 mx.example.test.");
    assert_eq!(r[1]["answers"][0]["data"], "127.0.0.1");
    assert_eq!(r[2]["answers"][0]["data"], "v=spf1 ip4:127.0.0.1 -all");
    assert_eq!(r[3]["rcode"], "NXDOMAIN", "unknown name: {}", r[3]);
    assert_eq!(r[4]["rcode"], "NOERROR", "known name, no MX: {}", r[4]);
    assert_eq!(r[4]["answers"], json!([]));
    assert_eq!(r[5]["tc"], 1, "long TXT over UDP is truncated: {}", r[5]);
    assert_eq!(r[6]["tc"], 0);
    assert_eq!(
        r[6]["answers"][0]["data"],
        dkim.as_str(),
        "TCP carries it whole"
    );
    let chunks = r[6]["answers"][0]["chunks"].as_array().unwrap();
    assert!(
        chunks.len() > 1 && chunks[0] == 255,
        "split in 255-byte strings: {chunks:?}"
    );

    // Tests publish records while the server runs, e.g. a DKIM key after `domain add`.
    dns.set_records(json!([
        {"name": "example.test", "type": "MX", "value": "20 mx2.example.test"},
        {"name": "mx2.example.test", "type": "A", "value": "127.0.0.2"},
    ]));
    let r = ask(
        &dns,
        json!([
            ["example.test", "MX", "udp"],
            ["mx2.example.test", "A", "tcp"],
            ["mx.example.test", "A", "udp"],
        ]),
    );
    assert_eq!(r[0]["answers"][0]["data"], "20 mx2.example.test.");
    assert_eq!(r[1]["answers"][0]["data"], "127.0.0.2");
    assert_eq!(r[2]["rcode"], "NXDOMAIN", "old record gone: {}", r[2]);
}

#[test]
fn sink_keeps_a_swaks_message_byte_exact() {
    if !require_support() || !require_tool("swaks") {
        return;
    }
    let sink = Sink::start(&[]);
    // Leading dots (one line is a lone dot), 8-bit UTF-8 and a non-UTF-8 byte, a bare LF inside
    // a line, trailing spaces: all must arrive exactly as sent.
    let message: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: bytes\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
        .leading dot\r\n..two dots\r\n.\r\nGr\xc3\xbc\xc3\x9fe \xff\r\nbare\nlf\r\ntrailing   \r\n";
    let dir = common::TestDir::new("mailmux-harness");
    let data_file = dir.path().join("data.smtp");
    std::fs::write(&data_file, swaks_data(message)).unwrap();
    let server = sink.addr().to_string();
    let data_arg = format!("@{}", data_file.display());
    let (status, transcript) = swaks_status(&[
        "--server",
        &server,
        "--from",
        "a@example.test",
        "--to",
        "b@example.test",
        "--data",
        &data_arg,
        "--no-data-fixup",
    ]);
    assert!(status.success(), "swaks: {status}\n{transcript}");
    assert!(
        !transcript.contains("<** "),
        "no error reply at all: {transcript}"
    );

    let got = sink.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "a@example.test");
    assert_eq!(got[0].rcpt_tos, vec!["b@example.test".to_string()]);
    assert_eq!(got[0].meta["tls"], false);
    assert_eq!(got[0].header("subject").as_deref(), Some("bytes"));
    assert!(
        got[0].raw == message,
        "not byte-exact:\n got {:?}\nwant {:?}",
        String::from_utf8_lossy(&got[0].raw),
        String::from_utf8_lossy(message)
    );
}

#[test]
fn sink_tempfails_then_accepts_and_rejects() {
    if !require_support() || !require_tool("swaks") {
        return;
    }
    let sink = Sink::start(&[
        "--tempfail-rcpt",
        "^retry@:1",
        "--reject-rcpt",
        "^nobody@",
        "--tempfail-data",
        "1",
    ]);
    let server = sink.addr().to_string();
    let send =
        |to: &str| swaks_status(&["--server", &server, "--from", "a@example.test", "--to", to]);
    let (status, t) = send("retry@example.test");
    assert_eq!(status.code(), Some(24), "RCPT 451 first:\n{t}");
    assert!(t.contains("451 4.3.0"), "{t}");
    let (status, t) = send("retry@example.test");
    assert_eq!(status.code(), Some(26), "then DATA 451 once:\n{t}");
    let (status, t) = send("retry@example.test");
    assert!(status.success(), "then accepted:\n{t}");
    let (status, t) = send("nobody@example.test");
    assert_eq!(status.code(), Some(24), "{t}");
    assert!(t.contains("550 5.1.1"), "{t}");

    let got = sink.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "only the accepted one is kept");
    assert_eq!(got[0].rcpt_tos, vec!["retry@example.test".to_string()]);
}

#[test]
fn smtplib_client_reports_starttls_auth_and_refusals() {
    if !require_support() {
        return;
    }
    let sink = Sink::start(&["--starttls-self-signed", "--auth", "app:s3cret"]);
    let port = sink.port().to_string();
    let message = b"Subject: smtplib\r\n\r\n.dot line\r\n";

    let (ok, report) = submit_smtplib_args(
        &[
            "--port",
            &port,
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
        ],
        message,
    );
    assert!(!ok);
    assert_eq!(report["code"], 530, "MAIL before AUTH: {report}");
    assert_eq!(report["tls"], true);

    let (ok, report) = submit_smtplib_args(
        &[
            "--port",
            &port,
            "--user",
            "app",
            "--password",
            "wrong",
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
        ],
        message,
    );
    assert!(!ok);
    assert_eq!(report["code"], 535, "{report}");
    assert_eq!(report["error"], "SMTPAuthenticationError");

    let (ok, report) = submit_smtplib_args(
        &[
            "--port",
            &port,
            "--user",
            "app",
            "--password",
            "s3cret",
            "--auth-mech",
            "LOGIN",
            "--from",
            "a@example.test",
            "--to",
            "b@example.test",
        ],
        message,
    );
    assert!(ok, "{report}");
    assert_eq!(report["code"], 250);
    assert!(
        report["text"].as_str().unwrap().starts_with("2.0.0"),
        "{report}"
    );

    let got = sink.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(got[0].meta["tls"], true);
    assert_eq!(got[0].meta["auth_login"], "app");
    assert_eq!(got[0].raw, message, "smtplib dot-stuffs, the sink unstuffs");
}

#[test]
fn postgres_url_gives_a_fresh_database_per_caller() {
    let Some(a) = postgres_url() else { return };
    let Some(b) = postgres_url() else { return };
    assert_ne!(a, b, "each caller gets its own database");
    assert!(a.starts_with("postgres://"), "{a}");
    if std::env::var_os("MAILMUX_TEST_POSTGRES_URL").is_none() {
        assert!(
            a.starts_with("postgres://postgres@127.0.0.1:"),
            "loopback only: {a}"
        );
        assert_eq!(psql(&b, "SHOW listen_addresses"), "127.0.0.1");
    }
    psql(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)");
    assert_eq!(psql(&a, "SELECT x FROM t"), "42");
    assert_eq!(
        psql(&b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'"),
        "0",
        "databases are isolated"
    );
}

#[test]
fn swaks_with_data_fixup_is_byte_exact_when_the_file_ends_in_a_dot_line() {
    if !require_support() || !require_tool("swaks") {
        return;
    }
    let sink = Sink::start(&[]);
    let message: &[u8] = b"Subject: fixup\r\n\r\n.leading\r\nlast line\r\n";
    let dir = common::TestDir::new("mailmux-harness");
    // swaks dot-stuffs itself and appends "\r\n.\r\n" unless the data ends in one.
    let mut file = message.to_vec();
    file.extend_from_slice(b".\r\n");
    let path = dir.path().join("msg.eml");
    std::fs::write(&path, &file).unwrap();
    let server = sink.addr().to_string();
    let data_arg = format!("@{}", path.display());
    let (ok, transcript) = swaks(&[
        "--server",
        &server,
        "--from",
        "a@example.test",
        "--to",
        "b@example.test",
        "--data",
        &data_arg,
    ]);
    assert!(ok, "{transcript}");
    let got = sink.wait_for_messages(1, Duration::from_secs(10));
    assert_eq!(
        String::from_utf8_lossy(&got[0].raw),
        String::from_utf8_lossy(message)
    );
}

#[test]
fn smtplib_helpers_submit_and_burst_over_starttls_and_auth() {
    if !require_support() {
        return;
    }
    let sink = Sink::start(&["--starttls-self-signed", "--auth", "app:pw"]);
    let reply = submit_smtplib(
        sink.addr(),
        "app",
        "pw",
        "a@example.test",
        &["b@example.test", "c@example.test"],
        b"Subject: typed\r\n\r\nhello\r\n",
        false,
    );
    assert_eq!(reply["code"], 250, "{reply}");
    assert_eq!(reply["tls"], true, "{reply}");

    let mut burst = smtplib_burst(
        sink.addr(),
        "app",
        "pw",
        "a@example.test",
        "b@example.test",
        3,
        5,
    );
    assert!(burst.wait_for_accepted(5, Duration::from_secs(30)) >= 5);
    let accepted = burst.finish();
    assert_eq!(accepted.len(), 15, "3 sessions x 5 messages");
    let got = sink.wait_for_messages(16, Duration::from_secs(30));
    let ids: std::collections::HashSet<String> =
        got.iter().filter_map(|m| m.header("message-id")).collect();
    for id in &accepted {
        assert!(ids.contains(id), "{id} acknowledged but not received");
    }
    assert_eq!(got[0].rcpt_tos.len(), 2);
}
