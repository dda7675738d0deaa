//! A stored inbound message as JSON (`GET /api/tenants/{id}/inbound/{id}`): the envelope, the
//! headers as they came (in order, unfolded by mail-parser), the main text and HTML bodies, and
//! the attachments' metadata (never their bytes: those are in `…/raw`).

use mail_parser::{Address, MessageParser, MimeHeaders};
use mailmux_store::InboundMessage;
use serde_json::{Value, json};

/// The summary a listing shows: envelope, size, time.
pub fn summary(message: &InboundMessage) -> Value {
    json!({
        "id": message.id,
        "mail_from": message.mail_from,
        "recipients": recipients(message),
        "size": message.size,
        "received_at": message.received_at,
    })
}

fn recipients(message: &InboundMessage) -> Value {
    // Written by `Inbound::accept`; a row that does not parse shows as no recipients rather
    // than failing the whole listing.
    serde_json::from_str(&message.recipients).unwrap_or_else(|_| json!([]))
}

fn addresses(address: Option<&Address<'_>>) -> Value {
    let Some(address) = address else {
        return json!([]);
    };
    Value::Array(
        address
            .iter()
            .map(|a| json!({"name": a.name(), "address": a.address()}))
            .collect(),
    )
}

/// The whole parsed view of `message` (which must carry its bytes).
pub fn parsed(message: &InboundMessage) -> Value {
    let mut out = summary(message);
    let Some(parsed) = MessageParser::default().parse(&message.raw) else {
        out["parse_error"] = json!("the message could not be parsed; see …/raw");
        return out;
    };
    let headers: Vec<Value> = parsed
        .headers_raw()
        .map(|(name, value)| json!({"name": name, "value": value.trim()}))
        .collect();
    let attachments: Vec<Value> = parsed
        .attachments()
        .map(|part| {
            json!({
                "filename": part.attachment_name(),
                "content_type": part.content_type().map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                }),
                "size": part.len(),
            })
        })
        .collect();
    out["subject"] = json!(parsed.subject());
    out["message_id"] = json!(parsed.message_id());
    out["date"] = json!(parsed.date().map(|d| d.to_rfc3339()));
    out["from"] = addresses(parsed.from());
    out["to"] = addresses(parsed.to());
    out["cc"] = addresses(parsed.cc());
    out["headers"] = Value::Array(headers);
    out["text"] = json!(parsed.body_text(0));
    out["html"] = json!(parsed.body_html(0));
    out["attachments"] = Value::Array(attachments);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_view_has_envelope_headers_bodies_and_attachment_metadata() {
        let raw = b"From: Ann <ann@example.org>\r\nTo: sales@acme.test\r\nSubject: Hi\r\n\
            MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nHello there\r\n\
            --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; \
            filename=q.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let message = InboundMessage {
            id: "m1".into(),
            tenant_id: "t".into(),
            mail_from: "ann@example.org".into(),
            recipients: r#"[{"address":"sales@acme.test","rule_id":"r1","tag":null}]"#.into(),
            size: raw.len() as u64,
            raw: raw.to_vec(),
            received_at: 5,
        };
        let view = parsed(&message);
        assert_eq!(view["subject"], "Hi");
        assert_eq!(view["from"][0]["address"], "ann@example.org");
        assert_eq!(view["recipients"][0]["rule_id"], "r1");
        assert_eq!(view["text"].as_str().unwrap().trim(), "Hello there");
        assert_eq!(view["attachments"][0]["filename"], "q.pdf");
        assert_eq!(view["attachments"][0]["content_type"], "application/pdf");
        assert_eq!(view["attachments"][0]["size"], 5);
        assert_eq!(view["headers"][2]["name"], "Subject");
    }
}
