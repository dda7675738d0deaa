//! Issue 4 over the admin API, on SQLite and on Postgres: the HTTP send API through the shared
//! policy (each limit and flag on and off, with the contract's statuses), the sending limits
//! in PUT /api/tenants/{id} and /usage, credential rates, and return-path domains.

mod harness;

use axum::http::{Method, StatusCode};
use base64::Engine;
use harness::{Harness, OPERATOR_TOKEN};
use serde_json::{Value, json};

on_both_backends!(
    send_api_queues_through_the_policy,
    send_api_raw_messages_are_completed_like_submissions,
    send_api_limits_answer_with_the_contracts_statuses,
    send_api_status_and_flags,
    sending_limits_are_stored_and_shown,
    return_path_needs_custom_domains_and_a_subdomain,
);

/// A tenant of `tier` with the verified domain `domain` and an API key: (id, key).
async fn sender(h: &Harness, name: &str, tier: &str, domain: &str) -> (String, String) {
    let tenant = h.tenant(name, tier).await;
    h.op(
        Method::POST,
        &format!("/api/tenants/{tenant}/domains"),
        Some(json!({"domain": domain, "key_type": "ed25519", "verified": true})),
        201,
    )
    .await;
    let key = h.api_key(&tenant).await;
    (tenant, key)
}

async fn send(h: &Harness, key: &str, body: Value) -> (StatusCode, Value, Option<String>) {
    let (status, headers, value) = h
        .call_with_headers(
            Method::POST,
            "/api/send",
            Some(key),
            Some(body.to_string().into_bytes()),
            "application/json",
        )
        .await;
    let retry_after = headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, value, retry_after)
}

async fn update(h: &Harness, tenant: &str, body: Value) {
    h.op(
        Method::PUT,
        &format!("/api/tenants/{tenant}"),
        Some(body),
        200,
    )
    .await;
}

fn text_message(from: &str, to: &[&str]) -> Value {
    json!({"from": from, "to": to, "subject": "Hi", "text": "hello"})
}

async fn send_api_queues_through_the_policy(h: Harness) {
    let (tenant, key) = sender(&h, "Acme", "professional", "acme.example").await;

    // The operator has no tenant to send as.
    let (status, value, _) = send(
        &h,
        OPERATOR_TOKEN,
        text_message("app@acme.example", &["a@x.test"]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant API key")
    );

    // Fields: queued with origin api, the envelope from the fields, Bcc not in the message.
    let (status, sent, _) = send(
        &h,
        &key,
        json!({
            "from": "App <app@acme.example>", "to": ["a@x.test"], "cc": ["c@x.test"],
            "bcc": ["hidden@x.test"], "reply_to": "help@acme.example", "subject": "Hello",
            "text": "plain", "html": "<p>html</p>", "headers": {"X-Campaign": "spring"},
            "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                             "content_base64": base64::engine::general_purpose::STANDARD.encode("attached")}]
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(
        sent["recipients"],
        json!(["a@x.test", "c@x.test", "hidden@x.test"])
    );
    let id = sent["id"].as_str().unwrap();
    let shown = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/messages/{id}"),
            None,
            200,
        )
        .await;
    assert_eq!(shown["origin"], "api", "{shown}");
    assert_eq!(shown["mail_from"], "app@acme.example");
    let queued = h.queue.load_pending(id).await.unwrap().expect("queued");
    let body = String::from_utf8_lossy(&queued.body).into_owned();
    for want in [
        "Subject: Hello",
        "X-Campaign: spring",
        "multipart/mixed",
        "a.txt",
    ] {
        assert!(body.contains(want), "{want:?} missing:\n{body}");
    }
    assert!(!body.contains("hidden@x.test"), "Bcc stays blind:\n{body}");
    // The trace header comes first and names the HTTP client and the queue id; with three
    // recipients it names none of them.
    let trace = body.split("\r\n;").next().unwrap();
    assert!(
        body.starts_with("Received: from [127.0.0.1]\r\n\tby ")
            && trace.contains(&format!("(mailmux) with HTTP id {id};"))
            && !trace.contains("for <"),
        "{body}"
    );
    let ids: Vec<&str> = queued
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(ids, ["a@x.test", "c@x.test", "hidden@x.test"]);

    // Raw: the envelope from its headers.
    let (status, sent, _) = send(
        &h,
        &key,
        json!({"raw": "From: app@acme.example\nTo: r@x.test\nSubject: raw\n\nbody\n"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["recipients"], json!(["r@x.test"]));
    let raw = h
        .queue
        .load_pending(sent["id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("queued");
    let raw = String::from_utf8_lossy(&raw.body).into_owned();
    assert!(
        raw.starts_with("Received: from [127.0.0.1]\r\n") && raw.contains("\r\n\tfor <r@x.test>;"),
        "{raw}"
    );

    // Sender rights: the envelope domain and the From: header, like SMTP.
    let (status, value, _) = send(&h, &key, text_message("app@other.example", &["a@x.test"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert_eq!(value["error"]["code"], "sender_not_allowed");
    let (status, value, _) = send(
        &h,
        &key,
        json!({"from": "app@acme.example", "raw": "From: ceo@bank.example\nTo: r@x.test\n\nx\n"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("From"));

    // Bad input: 422 naming the field; malformed JSON 400; not JSON 415.
    let (status, value, _) = send(&h, &key, json!({"to": ["a@x.test"], "text": "x"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("from"));
    let (status, _) = h
        .call_raw(
            Method::POST,
            "/api/send",
            Some(&key),
            Some(b"{".to_vec()),
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .call_raw(
            Method::POST,
            "/api/send",
            Some(&key),
            Some(b"x".to_vec()),
            "text/plain",
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Counted like SMTP mail.
    let usage = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/usage"),
            None,
            200,
        )
        .await;
    assert_eq!(usage["usage"]["messages_24h"], 2, "{usage}");
}

/// Issue 11: a raw message gets what a submission server adds (Date:, Message-ID:) and long
/// body lines re-encoded, as over SMTP; a header line over the limit is refused.
async fn send_api_raw_messages_are_completed_like_submissions(h: Harness) {
    let (_, key) = sender(&h, "Acme", "professional", "acme.example").await;
    let stored = |id: String| {
        let queue = h.queue.clone();
        async move {
            let queued = queue.load_pending(&id).await.unwrap().expect("queued");
            String::from_utf8(queued.body.to_vec()).unwrap()
        }
    };
    let long = format!("{} end", "word ".repeat(300));
    let raw = format!("From: app@acme.example\nTo: r@x.test\nSubject: raw\n\nshort\n{long}\n");
    let (status, sent, _) = send(&h, &key, json!({ "raw": raw })).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let text = stored(sent["id"].as_str().unwrap().to_string()).await;
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(head.contains("\r\nDate: "), "{text}");
    assert!(
        head.contains(&format!(
            "\r\nMessage-ID: <{}.",
            sent["id"].as_str().unwrap()
        )),
        "{text}"
    );
    assert!(
        head.contains("Content-Transfer-Encoding: quoted-printable"),
        "{text}"
    );
    assert!(text.split("\r\n").all(|l| l.len() <= 998), "{text}");
    let parsed = mail_parser::MessageParser::new()
        .parse(text.as_bytes())
        .unwrap();
    assert_eq!(parsed.body_text(0).unwrap(), format!("short\r\n{long}\r\n"));

    // The caller's own Date: and Message-ID: are kept, and no second one is added.
    let raw = "From: app@acme.example\nTo: r@x.test\nDate: Mon, 23 Nov 2026 12:00:00 +0000\n\
               Message-ID: <own@acme.example>\n\nbody\n";
    let (status, sent, _) = send(&h, &key, json!({ "raw": raw })).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let text = stored(sent["id"].as_str().unwrap().to_string()).await;
    assert!(text.ends_with(&raw.replace('\n', "\r\n")), "{text}");
    assert_eq!(text.matches("Message-ID:").count(), 1, "{text}");

    let raw = format!(
        "From: app@acme.example\nTo: r@x.test\nX-Long: {}\n\nbody\n",
        "x".repeat(1000)
    );
    let (status, value, _) = send(&h, &key, json!({ "raw": raw })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("header line"),
        "{value}"
    );
}

async fn send_api_limits_answer_with_the_contracts_statuses(h: Harness) {
    let (tenant, key) = sender(&h, "Limits", "professional", "limits.example").await;
    let from = "app@limits.example";

    // Recipients: 422 beyond the tenant's limit; one more allowed once raised.
    update(&h, &tenant, json!({"max_recipients_per_message": 2})).await;
    let (status, value, _) = send(
        &h,
        &key,
        text_message(from, &["a@x.test", "b@x.test", "c@x.test"]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    assert_eq!(value["error"]["code"], "too_many_recipients");
    let (status, _, _) = send(&h, &key, text_message(from, &["a@x.test", "b@x.test"])).await;
    assert_eq!(status, StatusCode::OK);
    update(&h, &tenant, json!({"max_recipients_per_message": 0})).await;
    let (status, _, _) = send(
        &h,
        &key,
        text_message(from, &["a@x.test", "b@x.test", "c@x.test"]),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "0 is unlimited (under the relay's cap)"
    );

    // Size: 413 beyond the tenant's limit.
    update(&h, &tenant, json!({"max_message_size": 2048})).await;
    let big = json!({"from": from, "to": ["a@x.test"], "text": "x".repeat(4000)});
    let (status, value, _) = send(&h, &key, big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{value}");
    assert_eq!(value["error"]["code"], "message_too_large");
    assert!(value["error"]["message"].as_str().unwrap().contains("2048"));
    update(&h, &tenant, json!({"max_message_size": 0})).await;
    assert_eq!(send(&h, &key, big).await.0, StatusCode::OK);

    // Rate: 429 with Retry-After once the burst is spent.
    update(
        &h,
        &tenant,
        json!({"rate_per_second": 2, "rate_per_minute": 0}),
    )
    .await;
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..4 {
        let (status, value, retry_after) = send(&h, &key, text_message(from, &["a@x.test"])).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(value["error"]["code"], "rate_limited", "{value}");
            assert!(
                value["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("per second")
            );
            retry = retry_after;
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(&statuses[..2], [200, 200], "the burst passes: {statuses:?}");
    assert!(statuses[2..].contains(&429), "then 429: {statuses:?}");
    assert_eq!(retry.as_deref(), Some("1"), "Retry-After in whole seconds");
    update(&h, &tenant, json!({"rate_per_second": 0})).await;
    assert_eq!(
        send(&h, &key, text_message(from, &["a@x.test"])).await.0,
        StatusCode::OK
    );

    // Daily quota: 429 with a Retry-After until the oldest message leaves the 24 hours.
    let usage = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/usage"),
            None,
            200,
        )
        .await;
    let sent = usage["usage"]["messages_24h"].as_u64().unwrap();
    update(&h, &tenant, json!({"max_messages_per_day": sent + 1})).await;
    assert_eq!(
        send(&h, &key, text_message(from, &["a@x.test"])).await.0,
        StatusCode::OK
    );
    let (status, value, retry_after) = send(&h, &key, text_message(from, &["a@x.test"])).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{value}");
    assert_eq!(value["error"]["code"], "quota_exceeded");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quota")
    );
    let wait: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(wait > 86_000 && wait <= 86_400, "about a day: {wait}");
    update(&h, &tenant, json!({"max_messages_per_day": 0})).await;
    assert_eq!(
        send(&h, &key, text_message(from, &["a@x.test"])).await.0,
        StatusCode::OK
    );
}

async fn send_api_status_and_flags(h: Harness) {
    let (tenant, key) = sender(&h, "Status", "starter", "status.example").await;
    let from = "app@status.example";
    let message = text_message(from, &["a@x.test"]);

    for (status_name, reason) in [("paused", "bounce rate review"), ("suspended", "abuse")] {
        update(
            &h,
            &tenant,
            json!({"status": status_name, "status_reason": reason}),
        )
        .await;
        let (status, value, _) = send(&h, &key, message.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{status_name}: {value}");
        assert_eq!(value["error"]["code"], "tenant_not_sending");
        assert!(
            value["error"]["message"].as_str().unwrap().contains(reason),
            "{value}"
        );
    }
    update(&h, &tenant, json!({"status": "active"})).await;
    assert_eq!(send(&h, &key, message.clone()).await.0, StatusCode::OK);
    update(&h, &tenant, json!({"enabled": false})).await;
    assert_eq!(
        send(&h, &key, message.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    update(&h, &tenant, json!({"enabled": true})).await;

    // api_access gates the send API (the key stops working, at once).
    update(&h, &tenant, json!({"features": {"api_access": false}})).await;
    let (status, value, _) = send(&h, &key, message.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api_access")
    );
    update(&h, &tenant, json!({"features": {"api_access": true}})).await;
    assert_eq!(send(&h, &key, message).await.0, StatusCode::OK);
}

async fn sending_limits_are_stored_and_shown(h: Harness) {
    let tenant = h.tenant("Shown", "free").await;
    let usage = h
        .op(
            Method::GET,
            &format!("/api/tenants/{tenant}/usage"),
            None,
            200,
        )
        .await;
    // The free tier's defaults (mailmux-core's Tier::default_limits).
    assert_eq!(
        usage["limits"],
        json!({
            "max_users": 5, "max_domains": 1, "max_storage_mb": 1024,
            "max_messages_per_day": 100, "max_recipients_per_message": 50,
            "max_message_size": 10485760, "rate_per_second": 2, "rate_per_minute": 60,
            "max_connections": 5
        })
    );
    update(
        &h,
        &tenant,
        json!({"max_recipients_per_message": 9, "max_message_size": 4096,
               "rate_per_second": 0, "rate_per_minute": 30, "max_connections": 1}),
    )
    .await;
    let shown = h
        .op(Method::GET, &format!("/api/tenants/{tenant}"), None, 200)
        .await;
    let limits = &shown["limits"];
    assert_eq!(
        (
            &limits["max_recipients_per_message"],
            &limits["max_message_size"],
            &limits["rate_per_second"],
            &limits["rate_per_minute"],
            &limits["max_connections"]
        ),
        (&json!(9), &json!(4096), &json!(0), &json!(30), &json!(1))
    );
    // A tenant key cannot raise its own limits.
    let key = {
        h.op(
            Method::PUT,
            &format!("/api/tenants/{tenant}"),
            Some(json!({"features": {"api_access": true}})),
            200,
        )
        .await;
        h.api_key(&tenant).await
    };
    let (status, _) = h
        .call(
            Method::PUT,
            &format!("/api/tenants/{tenant}"),
            Some(&key),
            Some(json!({"rate_per_second": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A credential's own rate.
    let credential = h
        .op(
            Method::POST,
            &format!("/api/tenants/{tenant}/credentials"),
            None,
            201,
        )
        .await;
    let cid = credential["id"].as_str().unwrap();
    let path = format!("/api/tenants/{tenant}/credentials/{cid}");
    let view = h
        .op(Method::PUT, &path, Some(json!({"rate_per_second": 3})), 200)
        .await;
    assert_eq!(
        (&view["rate_per_second"], &view["rate_per_minute"]),
        (&json!(3), &Value::Null)
    );
    assert_eq!(
        h.op(Method::GET, &path, None, 200).await["rate_per_second"],
        3
    );
    let view = h.op(Method::PUT, &path, Some(json!({})), 200).await;
    assert_eq!(view["rate_per_second"], Value::Null, "cleared");
    let (status, value) = h
        .call(
            Method::PUT,
            &path,
            Some(OPERATOR_TOKEN),
            Some(json!({"rate": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field: {value}");
}

async fn return_path_needs_custom_domains_and_a_subdomain(h: Harness) {
    let (starter, _) = sender(&h, "Small", "starter", "small.example").await;
    let path = format!("/api/tenants/{starter}/domains/small.example/return-path");
    let (status, value) = h
        .call(
            Method::PUT,
            &path,
            Some(OPERATOR_TOKEN),
            Some(json!({"return_path": "bounce.small.example"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("custom_domains")
    );

    let (pro, _) = sender(&h, "Big", "professional", "big.example").await;
    let path = format!("/api/tenants/{pro}/domains/big.example/return-path");
    let shown = h.op(Method::GET, &path, None, 200).await;
    assert_eq!(shown["return_path"], Value::Null);
    for bad in [
        "big.example",
        "bounce.other.example",
        "small.example",
        "not a domain",
    ] {
        let (status, value) = h
            .call(
                Method::PUT,
                &path,
                Some(OPERATOR_TOKEN),
                Some(json!({"return_path": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {value}");
    }
    let set = h
        .op(
            Method::PUT,
            &path,
            Some(json!({"return_path": "Bounce.Big.Example"})),
            200,
        )
        .await;
    assert_eq!(set["return_path"], "bounce.big.example");
    // Not used before its records are found (dns_verify.rs checks them against a DNS server).
    assert_eq!(
        (&set["verified"], &set["in_use"]),
        (&json!(false), &json!(false))
    );
    assert!(
        set["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "pending")
    );
    let records: Vec<(String, String)> = set["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().into(),
                r["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            ("MX".to_string(), "bounce.big.example".to_string()),
            ("TXT".to_string(), "bounce.big.example".to_string())
        ]
    );
    h.op(Method::DELETE, &path, None, 200).await;
    assert_eq!(
        h.op(Method::GET, &path, None, 200).await["return_path"],
        Value::Null
    );
    // Nothing to verify: 422 naming the way out.
    let (status, value) = h
        .call(
            Method::POST,
            &format!("{path}/verify"),
            Some(OPERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{value}");
    assert!(value["error"]["message"].as_str().unwrap().contains("PUT"));
}
