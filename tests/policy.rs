//! End to end, issue 4: per-tenant policy at SMTP time and in the HTTP send API, against the
//! real binary, real clients (Python smtplib) and a real receiving server. Each limit and flag
//! on and off; changes through the API biting on the next transaction; the daily count exact
//! under 20 concurrent sessions and shared by two nodes on one Postgres; a paused tenant's
//! queued mail held (not bounced) and delivered after resume.

mod common;

use std::time::{Duration, Instant};

use common::{DnsServer, Mailmux, Sink, TestTenant, http, http_with_headers};
use serde_json::{Value, json};

/// DNS: sink.test has its MX on 127.0.0.1, where the sink listens.
fn dns() -> DnsServer {
    DnsServer::start(json!({"records": [
        {"name": "sink.test", "type": "MX", "value": "10 mx.sink.test"},
        {"name": "mx.sink.test", "type": "A", "value": "127.0.0.1"},
    ]}))
}

fn env_for(dns: &DnsServer, sink: &Sink) -> Vec<(String, String)> {
    vec![
        (
            "MAILMUX_DELIVERY__DNS_SERVERS".into(),
            format!("[\"{}\"]", dns.addr()),
        ),
        ("MAILMUX_DELIVERY__MX_PORT".into(), sink.port().to_string()),
        ("MAILMUX_DELIVERY__RETRY_INITIAL_SECS".into(), "1".into()),
        ("MAILMUX_DELIVERY__RETRY_FACTOR".into(), "1.0".into()),
        ("MAILMUX_QUEUE__POLL_INTERVAL_MS".into(), "200".into()),
        // Delivery reads the tenant for every message, so a change made through the API
        // applies to the next one and no test waits out the one-second cache (whose bound the
        // delivery crate's unit tests check on tokio's clock).
        ("MAILMUX_DELIVERY__CACHE_TTL_MS".into(), "0".into()),
    ]
}

fn start(dns: &DnsServer, sink: &Sink, extra: &[(&str, &str)], db: Option<&str>) -> Mailmux {
    let mut env = env_for(dns, sink);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    match db {
        Some(url) => Mailmux::start_with_db(url, &env),
        None => Mailmux::start(&env),
    }
}

/// `PUT /api/tenants/{id}` as the operator.
/// The first message the sink got for `rcpt`, waiting up to 30 s for it.
fn delivered_to(sink: &Sink, rcpt: &str) -> common::Received {
    common::wait_until(Duration::from_secs(30), || {
        sink.messages()
            .into_iter()
            .find(|m| m.rcpt_tos.iter().any(|r| r == rcpt))
    })
    .unwrap_or_else(|| panic!("{rcpt} not delivered within 30 s"))
}

fn update(mm: &Mailmux, tenant: &str, body: Value) {
    let (status, value) = http(
        mm.admin(),
        "PUT",
        &format!("/api/tenants/{tenant}"),
        Some(mm.admin_token()),
        Some(&body),
    );
    assert_eq!(status, 200, "PUT tenant {body}: {value}");
}

fn usage(mm: &Mailmux, tenant: &str) -> Value {
    let (status, value) = http(
        mm.admin(),
        "GET",
        &format!("/api/tenants/{tenant}/usage"),
        Some(mm.admin_token()),
        None,
    );
    assert_eq!(status, 200, "{value}");
    value
}

fn messages_24h(mm: &Mailmux, tenant: &str) -> u64 {
    usage(mm, tenant)["usage"]["messages_24h"].as_u64().unwrap()
}

/// A tenant with no sending limits but the daily quota, for tests that send in bursts.
fn unthrottled(mm: &Mailmux, name: &str, domain: &str) -> TestTenant {
    let acct = mm.setup_tenant(name, "professional", domain);
    update(
        mm,
        &acct.id,
        json!({"rate_per_second": 0, "rate_per_minute": 0, "max_connections": 0}),
    );
    acct
}

fn message(domain: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: App <app@{domain}>\r\nTo: <user@sink.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@{domain}>\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

/// Submits from `app@<the tenant's domain>` (see [`common::submit_as`]).
fn submit(mm: &Mailmux, acct: &TestTenant, to: &[&str], body: &[u8], repeat: usize) -> Value {
    common::submit_as(mm, acct, &format!("app@{}", acct.domain), to, body, repeat)
}

#[track_caller]
fn assert_refused(report: &Value, stage: &str, code: u64, needle: &str) {
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], stage, "{report}");
    assert_eq!(report["code"], code, "{report}");
    let text = report["text"].as_str().unwrap_or_default();
    assert!(text.contains(needle), "{needle:?} not in {report}");
}

/// EHLO SIZE after AUTH, and what a second concurrent AUTH of the same tenant hears.
const TWO_SESSIONS_PY: &str = r#"
import json, smtplib, ssl, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def session():
    s = smtplib.SMTP(host, port, timeout=30); s.starttls(context=ctx); s.ehlo(); return s
a = session()
size_before = a.esmtp_features.get("size")
a.login(user, pw)
a.ehlo()
size_after = a.esmtp_features.get("size")
b = session()
b.user, b.password = user, pw
try:
    # PLAIN only: login() would swallow the 421 and try the next mechanism.
    code, msg = b.auth("PLAIN", b.auth_plain, initial_response_ok=True)
    second = [code, msg.decode()]
except smtplib.SMTPResponseException as e:
    second = [e.smtp_code, e.smtp_error.decode()]
except smtplib.SMTPServerDisconnected as e:
    second = [0, str(e)]
print(json.dumps({"size_before": size_before, "size_after": size_after, "second": second}))
"#;

fn two_sessions(mm: &Mailmux, acct: &TestTenant) -> Value {
    let addr = mm.submission();
    let out = common::python_eval(
        TWO_SESSIONS_PY,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            &acct.username,
            &acct.password,
        ],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn each_limit_and_flag_on_and_off_over_smtp_and_http() {
    if !common::require_support() {
        return;
    }
    let dns = dns();
    let sink = Sink::start(&[]);
    let mm = start(&dns, &sink, &[], None);
    let acct = mm.setup_tenant("acme", "professional", "acme.test");
    let t = acct.id.as_str();
    let body = message("acme.test", "limits");
    let ok = |report: &Value| assert_eq!(report["code"], 250, "{report}");

    // Recipients per message: 452 4.5.3 beyond the tenant's limit; 0 lifts it.
    update(&mm, t, json!({"max_recipients_per_message": 1}));
    let report = submit(&mm, &acct, &["a@sink.test", "b@sink.test"], &body, 1);
    ok(&report);
    assert_eq!(report["rcpt"]["b@sink.test"][0], 452, "{report}");
    assert!(
        report["rcpt"]["b@sink.test"][1]
            .as_str()
            .unwrap()
            .starts_with("4.5.3")
    );
    update(&mm, t, json!({"max_recipients_per_message": 0}));
    let report = submit(&mm, &acct, &["a@sink.test", "b@sink.test"], &body, 1);
    assert_eq!(report["rcpt"]["b@sink.test"][0], 250, "{report}");

    // Message size: EHLO after AUTH shows the tenant's; DATA beyond it is 552 5.3.4.
    update(&mm, t, json!({"max_message_size": 2000}));
    let seen = two_sessions(&mm, &acct);
    assert_eq!(seen["size_before"], "26214400", "{seen}");
    assert_eq!(seen["size_after"], "2000", "{seen}");
    let mut big = message("acme.test", "big");
    big.extend(b"0123456789abcdef0123456789abcdef\r\n".repeat(100));
    assert_refused(
        &submit(&mm, &acct, &["a@sink.test"], &big, 1),
        "data",
        552,
        "5.3.4",
    );
    update(&mm, t, json!({"max_message_size": 0}));
    ok(&submit(&mm, &acct, &["a@sink.test"], &big, 1));

    // Concurrent sessions per tenant: the second AUTH hears 421 while the first is open.
    update(&mm, t, json!({"max_connections": 1}));
    let seen = two_sessions(&mm, &acct);
    assert_eq!(seen["second"][0], 421, "{seen}");
    update(&mm, t, json!({"max_connections": 0}));
    assert_eq!(two_sessions(&mm, &acct)["second"][0], 235);

    // Rate: 451 4.7.1 naming the rate once the burst is spent.
    update(&mm, t, json!({"rate_per_second": 1, "rate_per_minute": 0}));
    let report = submit(&mm, &acct, &["a@sink.test"], &body, 3);
    assert_refused(&report, "mail", 451, "rate");
    assert!(
        report["text"].as_str().unwrap().starts_with("4.7.1"),
        "{report}"
    );
    update(&mm, t, json!({"rate_per_second": 0}));
    ok(&submit(&mm, &acct, &["a@sink.test"], &body, 3));

    // Daily quota: 451 4.7.1 naming the quota.
    let sent = messages_24h(&mm, t);
    update(&mm, t, json!({"max_messages_per_day": sent + 1}));
    let report = submit(&mm, &acct, &["a@sink.test"], &body, 2);
    assert_refused(&report, "mail", 451, "quota");
    assert_eq!(messages_24h(&mm, t), sent + 1);
    update(&mm, t, json!({"max_messages_per_day": 0}));
    ok(&submit(&mm, &acct, &["a@sink.test"], &body, 1));

    // Status, with the reason in the text; each change bites on the very next transaction.
    for (status, code, needle) in [
        ("paused", 451, "bounce review"),
        ("suspended", 550, "bounce review"),
    ] {
        update(
            &mm,
            t,
            json!({"status": status, "status_reason": "bounce review"}),
        );
        let report = submit(&mm, &acct, &["a@sink.test"], &body, 1);
        assert_refused(&report, "mail", code, needle);
    }
    update(&mm, t, json!({"status": "active"}));
    ok(&submit(&mm, &acct, &["a@sink.test"], &body, 1));

    // custom_domains: the return-path domain goes on the wire once its MX and SPF records are
    // found, and while the flag is on.
    let return_path = format!("/api/tenants/{t}/domains/acme.test/return-path");
    let (status, value) = http(
        mm.admin(),
        "PUT",
        &return_path,
        Some(mm.admin_token()),
        Some(&json!({"return_path": "bounce.acme.test"})),
    );
    assert_eq!(status, 200, "{value}");
    ok(&submit(
        &mm,
        &acct,
        &["rp-unverified@sink.test"],
        &message("acme.test", "rp-unverified"),
        1,
    ));
    let mut zone: Vec<Value> = vec![
        json!({"name": "sink.test", "type": "MX", "value": "10 mx.sink.test"}),
        json!({"name": "mx.sink.test", "type": "A", "value": "127.0.0.1"}),
    ];
    for record in value["records"].as_array().unwrap() {
        zone.push(
            json!({"name": record["name"], "type": record["type"], "value": record["value"]}),
        );
    }
    dns.set_records(Value::Array(zone));
    let (status, value) = http(
        mm.admin(),
        "POST",
        &format!("{return_path}/verify"),
        Some(mm.admin_token()),
        None,
    );
    assert_eq!((status, &value["in_use"]), (200, &json!(true)), "{value}");
    ok(&submit(
        &mm,
        &acct,
        &["rp-on@sink.test"],
        &message("acme.test", "rp-on"),
        1,
    ));
    update(&mm, t, json!({"features": {"custom_domains": false}}));
    ok(&submit(
        &mm,
        &acct,
        &["rp-off@sink.test"],
        &message("acme.test", "rp-off"),
        1,
    ));
    // By recipient, not by count: mail held while the tenant was paused may still be
    // arriving.
    let from_of = |rcpt: &str| delivered_to(&sink, rcpt).mail_from;
    assert_eq!(from_of("rp-unverified@sink.test"), "app@acme.test");
    assert_eq!(from_of("rp-on@sink.test"), "app@bounce.acme.test");
    assert_eq!(from_of("rp-off@sink.test"), "app@acme.test");

    // The HTTP send API over real HTTP: the same policy, the same queue, delivered.
    let (status, key) = http(
        mm.admin(),
        "POST",
        &format!("/api/tenants/{t}/api-keys"),
        Some(mm.admin_token()),
        Some(&json!({"name": "e2e"})),
    );
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_string();
    let send =
        |body: Value| http_with_headers(mm.admin(), "POST", "/api/send", Some(&key), Some(&body));
    let mail = json!({"from": "app@acme.test", "to": ["api@sink.test"], "subject": "via api",
                      "text": "hello over HTTP"});
    let (status, _, sent) = send(mail.clone());
    assert_eq!(status, 200, "{sent}");
    let api = delivered_to(&sink, "api@sink.test");
    assert_eq!(api.header("subject").as_deref(), Some("via api"));
    let trace = api.header("received").expect("a Received: header");
    assert!(
        trace.starts_with("from [127.0.0.1]") && trace.contains(" with HTTP id "),
        "{trace}"
    );
    update(&mm, t, json!({"rate_per_second": 1}));
    let statuses: Vec<(u16, Option<String>)> = (0..3)
        .map(|_| {
            let (status, headers, _) = send(mail.clone());
            let retry = headers
                .into_iter()
                .find(|(k, _)| k == "retry-after")
                .map(|h| h.1);
            (status, retry)
        })
        .collect();
    assert!(statuses.contains(&(429, Some("1".into()))), "{statuses:?}");
    update(&mm, t, json!({"rate_per_second": 0, "status": "suspended"}));
    assert_eq!(send(mail.clone()).0, 403);
    update(
        &mm,
        t,
        json!({"status": "active", "features": {"api_access": false}}),
    );
    assert_eq!(send(mail.clone()).0, 403, "api_access off");
    update(&mm, t, json!({"features": {"api_access": true}}));
    assert_eq!(send(mail).0, 200);
}

#[test]
fn daily_count_is_exact_under_20_concurrent_sessions() {
    if !common::require_support() {
        return;
    }
    let dns = dns();
    let sink = Sink::start(&[]);
    let mm = start(&dns, &sink, &[], None);
    let acct = unthrottled(&mm, "burst", "burst.test");
    update(&mm, &acct.id, json!({"max_messages_per_day": 50}));
    // 20 sessions × 5 messages: 100 offered at once, each session going on until refused.
    let burst = common::smtplib_burst(
        mm.submission(),
        &acct.username,
        &acct.password,
        "app@burst.test",
        "user@sink.test",
        20,
        5,
    );
    let accepted = burst.finish();
    assert_eq!(accepted.len(), 50, "exactly the quota acknowledged");
    assert_eq!(messages_24h(&mm, &acct.id), 50, "and exactly that counted");
    // The refusals were the quota's (the sessions each stopped at theirs).
    assert!(mm.log().contains("Daily message quota reached"));
}

#[test]
fn two_nodes_on_one_postgres_share_the_daily_count() {
    if !common::require_support() {
        return;
    }
    let Some(url) = common::postgres_url() else {
        return;
    };
    let dns = dns();
    let sink = Sink::start(&[]);
    let a = start(&dns, &sink, &[], Some(&url));
    let b = start(&dns, &sink, &[], Some(&url));
    let acct = unthrottled(&a, "shared", "shared.test");
    let body = message("shared.test", "shared");

    // Quota 6: four on node A, then node B has room for two only.
    update(&a, &acct.id, json!({"max_messages_per_day": 6}));
    assert_eq!(submit(&a, &acct, &["u@sink.test"], &body, 4)["ok"], true);
    let report = submit(&b, &acct, &["u@sink.test"], &body, 3);
    assert_refused(&report, "mail", 451, "quota");
    assert_eq!(messages_24h(&b, &acct.id), 6);
    assert_eq!(messages_24h(&a, &acct.id), 6);

    // Both nodes at once, 10 sessions each: still exactly the quota between them.
    update(&b, &acct.id, json!({"max_messages_per_day": 36}));
    let bursts: Vec<_> = [&a, &b]
        .into_iter()
        .map(|node| {
            common::smtplib_burst(
                node.submission(),
                &acct.username,
                &acct.password,
                "app@shared.test",
                "user@sink.test",
                10,
                5,
            )
        })
        .collect();
    let accepted: usize = bursts.into_iter().map(|b| b.finish().len()).sum();
    assert_eq!(accepted, 30, "30 more fit under 36");
    assert_eq!(messages_24h(&a, &acct.id), 36);

    // A status change through node A bites on node B's next transaction.
    update(&b, &acct.id, json!({"max_messages_per_day": 0}));
    update(
        &a,
        &acct.id,
        json!({"status": "paused", "status_reason": "review"}),
    );
    let changed = Instant::now();
    let report = submit(&b, &acct, &["u@sink.test"], &body, 1);
    assert_refused(&report, "mail", 451, "review");
    assert!(changed.elapsed() < Duration::from_secs(5));
    update(&a, &acct.id, json!({"status": "active"}));
    assert_eq!(submit(&b, &acct, &["u@sink.test"], &body, 1)["ok"], true);
}

#[test]
fn paused_tenants_queued_mail_is_held_then_delivered_after_resume() {
    if !common::require_support() {
        return;
    }
    let dns = dns();
    // One delivery at a time, each taking 3 s: the second message waits in memory, already
    // handed to delivery, while the tenant is paused.
    let sink = Sink::start(&["--delay-ms", "3000"]);
    let mm = start(&dns, &sink, &[("MAILMUX_DELIVERY__CONCURRENCY", "1")], None);
    let acct = unthrottled(&mm, "held", "held.test");
    let t = acct.id.as_str();
    let first = submit(
        &mm,
        &acct,
        &["one@sink.test"],
        &message("held.test", "one"),
        1,
    );
    assert_eq!(first["code"], 250, "{first}");
    let second = submit(
        &mm,
        &acct,
        &["two@sink.test"],
        &message("held.test", "two"),
        1,
    );
    assert_eq!(second["code"], 250, "{second}");
    let second_id = second["text"]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    update(
        &mm,
        t,
        json!({"status": "paused", "status_reason": "review"}),
    );

    // The first was already being delivered; the second is held: not delivered, not
    // bounced, no attempt counted, still queued.
    let delivered = sink.wait_for_messages(1, Duration::from_secs(20));
    assert_eq!(delivered[0].rcpt_tos, ["one@sink.test"]);
    common::wait_until(Duration::from_secs(30), || {
        mm.log()
            .contains("held: the tenant is not active")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the second message was not held:\n{}", mm.log_tail(30)));
    assert_eq!(sink.messages().len(), 1, "nothing delivered while paused");
    let (status, shown) = http(
        mm.admin(),
        "GET",
        &format!("/api/tenants/{t}/messages/{second_id}"),
        Some(mm.admin_token()),
        None,
    );
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "queued", "{shown}");
    assert_eq!(shown["attempts"], 0, "held without an attempt: {shown}");
    assert!(mm.log().contains("held: the tenant is not active"));

    // Resumed: delivered, once.
    update(&mm, t, json!({"status": "active"}));
    let all = sink.wait_for_messages(2, Duration::from_secs(30));
    assert_eq!(all[1].rcpt_tos, ["two@sink.test"]);
    // Recorded as delivered (the report that would carry a bounce): the sink has it once.
    common::wait_until(Duration::from_secs(30), || {
        let (_, shown) = http(
            mm.admin(),
            "GET",
            &format!("/api/tenants/{t}/messages/{second_id}"),
            Some(mm.admin_token()),
            None,
        );
        (shown["status"] == "delivered").then_some(())
    })
    .expect("the second message's delivery was never recorded");
    assert_eq!(sink.messages().len(), 2, "no bounce, no duplicate");
}

#[test]
fn priority_support_mail_is_delivered_first_when_the_queue_is_contended() {
    if !common::require_support() {
        return;
    }
    let dns = dns();
    // One delivery at a time, 1.5 s each: a backlog forms in the store.
    let sink = Sink::start(&["--delay-ms", "1500"]);
    let mm = start(&dns, &sink, &[("MAILMUX_DELIVERY__CONCURRENCY", "1")], None);
    let normal = unthrottled(&mm, "normal", "normal.test");
    let urgent = mm.setup_tenant("urgent", "enterprise", "urgent.test");
    // Seven from the normal tenant: one in delivery, some waiting in memory, the rest in the
    // store; then one from the priority_support tenant, last.
    let report = submit(
        &mm,
        &normal,
        &["n@sink.test"],
        &message("normal.test", "n"),
        7,
    );
    assert_eq!(report["ok"], true, "{report}");
    let report = submit(
        &mm,
        &urgent,
        &["u@sink.test"],
        &message("urgent.test", "u"),
        1,
    );
    assert_eq!(report["ok"], true, "{report}");
    let all = sink.wait_for_messages(8, Duration::from_secs(60));
    let position = all
        .iter()
        .position(|m| m.rcpt_tos == ["u@sink.test"])
        .expect("delivered");
    // Claimed before the normal tenant's older messages still in the store (without priority
    // it would be last: claims are by due time).
    assert!(
        position < 7,
        "priority mail delivered {}th of 8",
        position + 1
    );
}
