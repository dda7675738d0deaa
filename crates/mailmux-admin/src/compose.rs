//! The message of an HTTP send, built from its JSON: MIME by lettre's builder from the fields
//! (`from`, `to`, `cc`, `bcc`, `reply_to`, `subject`, `text`, `html`, `headers`,
//! `attachments`), or a complete message given as `raw`. Pure: no I/O, so the shapes are
//! tested below; `send.rs` puts the policy and the queue around it.
//!
//! Security: nothing a caller gives may start a header line of its own. Header values and the
//! subject with CR or LF are refused; addresses go through lettre's parser; header names
//! through its checker; the fields that make the message's structure (From, To, Content-Type,
//! …) cannot be given as extra headers.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use mail_parser::{HeaderName as ParsedName, HeaderValue as ParsedValue, MessageParser};
use mailmux_core::message_bytes::{crlf_line_endings, header_section_len};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::error::{AdminError, Result};

/// `POST /api/send`: the message's fields, or `raw`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// `"a@b.example"` or `"Name <a@b.example>"`; the From: header and the envelope sender.
    /// With `raw`: the envelope sender only (default: the raw message's first From: address).
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Recipients not shown in the message.
    #[serde(default)]
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body (with `text`: multipart/alternative).
    pub html: Option<String>,
    /// Extra header fields, e.g. `{"X-Campaign": "spring", "Message-ID": "<a@b>"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentSpec>,
    /// A complete message (RFC 5322, MIME). Line ends may be LF; they are sent as CRLF. The
    /// recipients are `to` + `cc` + `bcc` when given, else its To:, Cc: and Bcc: headers (Bcc:
    /// is removed before sending). Excludes every other field but `from`. As over SMTP
    /// submission, a missing Date: or Message-ID: is added and a body part with lines over 998
    /// octets is re-encoded (quoted-printable); a header line that long is refused.
    pub raw: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentSpec {
    pub filename: String,
    /// e.g. `application/pdf`.
    pub content_type: String,
    pub content_base64: String,
}

/// A message ready for the policy and the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// Envelope sender.
    pub mail_from: String,
    /// Envelope recipients, each once, in the order given.
    pub recipients: Vec<String>,
    /// The message, CRLF line ends.
    pub message: Vec<u8>,
}

/// Header fields that make the message's structure: given through their own fields (or in
/// `raw`), never as extra headers, so a caller cannot build a second From: or break the MIME.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "received",
    "return-path",
    "dkim-signature",
];

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

/// Builds the message of a send. `message_id` is used when the caller gives none (the queue id
/// at the relay's hostname, so a Message-ID names the queue entry).
pub fn compose(request: &SendRequest, message_id: &str) -> Result<Composed> {
    match &request.raw {
        Some(raw) => compose_raw(request, raw),
        None => compose_fields(request, message_id),
    }
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox> {
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| invalid(format!("{field}: {value:?} is not an email address ({e})")))
}

fn address(field: &str, value: &str) -> Result<String> {
    // A bare address or "Name <address>": the envelope needs the address only.
    Ok(mailbox(field, value)?.email.to_string())
}

fn no_line_breaks(field: &str, value: &str) -> Result<()> {
    if value.contains(['\r', '\n']) {
        return Err(invalid(format!("{field} must not contain line breaks")));
    }
    Ok(())
}

/// `to` + `cc` + `bcc`, each address once.
fn envelope_recipients(groups: [(&str, &[String]); 3]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (field, values) in groups {
        for value in values {
            let address = address(field, value)?;
            if !out.iter().any(|a| a.eq_ignore_ascii_case(&address)) {
                out.push(address);
            }
        }
    }
    Ok(out)
}

fn compose_fields(request: &SendRequest, message_id: &str) -> Result<Composed> {
    let from_text = request
        .from
        .as_deref()
        .ok_or_else(|| invalid("from is required"))?;
    let from = mailbox("from", from_text)?;
    let recipients = envelope_recipients([
        ("to", &request.to),
        ("cc", &request.cc),
        ("bcc", &request.bcc),
    ])?;
    if recipients.is_empty() {
        return Err(invalid(
            "at least one recipient (to, cc or bcc) is required",
        ));
    }
    let mut builder = Message::builder().from(from.clone());
    for value in &request.to {
        builder = builder.to(mailbox("to", value)?);
    }
    for value in &request.cc {
        builder = builder.cc(mailbox("cc", value)?);
    }
    // lettre takes Bcc into the envelope and drops the header from the message.
    for value in &request.bcc {
        builder = builder.bcc(mailbox("bcc", value)?);
    }
    if let Some(reply_to) = &request.reply_to {
        builder = builder.reply_to(mailbox("reply_to", reply_to)?);
    }
    if let Some(subject) = &request.subject {
        no_line_breaks("subject", subject)?;
        builder = builder.subject(subject.as_str());
    }
    let mut own_message_id = None;
    for (name, value) in &request.headers {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "headers: {name} is set through its own field, not as a header"
            )));
        }
        no_line_breaks(&format!("headers.{name}"), value)?;
        if name.eq_ignore_ascii_case("message-id") {
            own_message_id = Some(value.clone());
            continue;
        }
        let header_name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| invalid(format!("headers: {name:?} is not a valid header name")))?;
        builder = builder.raw_header(HeaderValue::new(header_name, value.clone()));
    }
    builder = builder.message_id(Some(
        own_message_id.unwrap_or_else(|| message_id.to_string()),
    ));

    let body = match (&request.text, &request.html) {
        (Some(text), Some(html)) => Some(Body::Multi(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        ))),
        (Some(text), None) => Some(Body::Single(SinglePart::plain(text.clone()))),
        (None, Some(html)) => Some(Body::Single(SinglePart::html(html.clone()))),
        (None, None) => None,
    };
    let mut attachments = Vec::with_capacity(request.attachments.len());
    for (n, spec) in request.attachments.iter().enumerate() {
        attachments.push(attachment(n, spec)?);
    }
    let message = match (body, attachments.is_empty()) {
        (None, true) => return Err(invalid("text, html or an attachment is required")),
        (Some(Body::Single(part)), true) => builder.singlepart(part),
        (Some(Body::Multi(part)), true) => builder.multipart(part),
        (body, false) => {
            let mut mixed = match body {
                Some(Body::Single(part)) => MultiPart::mixed().singlepart(part),
                Some(Body::Multi(part)) => MultiPart::mixed().multipart(part),
                None => MultiPart::mixed().build(),
            };
            for part in attachments {
                mixed = mixed.singlepart(part);
            }
            builder.multipart(mixed)
        }
    }
    .map_err(|e| invalid(format!("cannot build the message: {e}")))?;
    Ok(Composed {
        mail_from: from.email.to_string(),
        recipients,
        message: message.formatted(),
    })
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

fn attachment(n: usize, spec: &AttachmentSpec) -> Result<SinglePart> {
    let field = format!("attachments[{n}]");
    no_line_breaks(&format!("{field}.filename"), &spec.filename)?;
    if spec.filename.trim().is_empty() {
        return Err(invalid(format!("{field}.filename must not be empty")));
    }
    let content_type = ContentType::parse(&spec.content_type).map_err(|_| {
        invalid(format!(
            "{field}.content_type {:?} is not a MIME type",
            spec.content_type
        ))
    })?;
    // Base64 as people paste it: line breaks and spaces are ignored.
    let compact: String = spec
        .content_base64
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let content = STANDARD
        .decode(compact)
        .map_err(|_| invalid(format!("{field}.content_base64 is not valid base64")))?;
    Ok(Attachment::new(spec.filename.clone()).body(content, content_type))
}

fn compose_raw(request: &SendRequest, raw: &str) -> Result<Composed> {
    let only_raw = request.to.is_empty() && request.cc.is_empty() && request.bcc.is_empty();
    let others = request.reply_to.is_some()
        || request.subject.is_some()
        || request.text.is_some()
        || request.html.is_some()
        || !request.headers.is_empty()
        || !request.attachments.is_empty();
    if others {
        return Err(invalid(
            "raw is a complete message: only from, to, cc and bcc may come with it",
        ));
    }
    let message = crlf(raw.as_bytes());
    let parsed = MessageParser::new()
        .parse_headers(&message)
        .ok_or_else(|| invalid("raw is not a message (no header fields found)"))?;
    let header_addresses = |name: ParsedName<'_>| -> Vec<String> {
        parsed
            .headers()
            .iter()
            .filter(|h| h.name == name)
            .flat_map(|h| match &h.value {
                ParsedValue::Address(list) => list
                    .iter()
                    .filter_map(|a| a.address().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    let mail_from = match &request.from {
        Some(from) => address("from", from)?,
        None => header_addresses(ParsedName::From)
            .into_iter()
            .next()
            .ok_or_else(|| invalid("raw has no From: address and no from was given"))?,
    };
    let recipients = if only_raw {
        envelope_recipients([
            ("raw To:", &header_addresses(ParsedName::To)),
            ("raw Cc:", &header_addresses(ParsedName::Cc)),
            ("raw Bcc:", &header_addresses(ParsedName::Bcc)),
        ])?
    } else {
        envelope_recipients([
            ("to", &request.to),
            ("cc", &request.cc),
            ("bcc", &request.bcc),
        ])?
    };
    if recipients.is_empty() {
        return Err(invalid(
            "no recipients: give to, cc or bcc, or To:/Cc:/Bcc: headers in raw",
        ));
    }
    // Checked as an address, like every other sender.
    mail_from
        .parse::<Address>()
        .map_err(|e| invalid(format!("from: {mail_from:?} is not an email address ({e})")))?;
    Ok(Composed {
        mail_from,
        recipients,
        message: without_bcc(&message),
    })
}

/// Line ends as CRLF (lone LFs and CRs become CRLF), and a final one.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = crlf_line_endings(bytes).into_owned();
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The message without its Bcc: fields (with their folded lines): blind copies stay blind.
fn without_bcc(message: &[u8]) -> Vec<u8> {
    let (head, body) = message.split_at(header_section_len(message));
    let mut out = Vec::with_capacity(message.len());
    let mut dropping = false;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(composed: &Composed) -> String {
        String::from_utf8(composed.message.clone()).unwrap()
    }

    fn fields() -> SendRequest {
        SendRequest {
            from: Some("App <app@acme.test>".into()),
            to: vec!["a@x.test".into(), "B <b@x.test>".into()],
            cc: vec!["c@x.test".into()],
            bcc: vec!["hidden@x.test".into(), "a@x.test".into()],
            reply_to: Some("help@acme.test".into()),
            subject: Some("Hello".into()),
            text: Some("plain body".into()),
            ..Default::default()
        }
    }

    #[test]
    fn fields_make_a_message_and_an_envelope() {
        let composed = compose(&fields(), "<q1@relay.test>").unwrap();
        assert_eq!(composed.mail_from, "app@acme.test");
        assert_eq!(
            composed.recipients,
            ["a@x.test", "b@x.test", "c@x.test", "hidden@x.test"],
            "to, cc, bcc; each once"
        );
        let m = text(&composed);
        for want in [
            "From: App <app@acme.test>\r\n",
            "To: a@x.test, B <b@x.test>\r\n",
            "Cc: c@x.test\r\n",
            "Reply-To: help@acme.test\r\n",
            "Subject: Hello\r\n",
            "Message-ID: <q1@relay.test>\r\n",
            "Date: ",
            "plain body",
        ] {
            assert!(m.contains(want), "{want:?} missing in\n{m}");
        }
        assert!(
            !m.to_ascii_lowercase().contains("hidden"),
            "Bcc is not shown:\n{m}"
        );
        assert!(
            !m.contains("\n\n") && !m.replace("\r\n", "").contains('\n'),
            "CRLF only"
        );
    }

    #[test]
    fn html_text_headers_and_attachments_make_mime() {
        let mut request = fields();
        request.html = Some("<p>html body</p>".into());
        request.headers.insert("X-Campaign".into(), "spring".into());
        request
            .headers
            .insert("Message-ID".into(), "<mine@acme.test>".into());
        request.attachments.push(AttachmentSpec {
            filename: "report.pdf".into(),
            content_type: "application/pdf".into(),
            content_base64: STANDARD.encode(b"%PDF-1.4 not really")[..].into(),
        });
        let m = text(&compose(&request, "<q1@relay.test>").unwrap());
        for want in [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/html",
            "application/pdf",
            "report.pdf",
            "X-Campaign: spring\r\n",
            "Message-ID: <mine@acme.test>\r\n",
        ] {
            assert!(m.contains(want), "{want:?} missing in\n{m}");
        }
        assert!(!m.contains("q1@relay.test"), "the caller's Message-ID wins");
        let parsed = MessageParser::new().parse(m.as_bytes()).unwrap();
        assert_eq!(parsed.attachment_count(), 1);
        assert_eq!(
            parsed.attachment(0).unwrap().contents(),
            b"%PDF-1.4 not really"
        );
        assert_eq!(parsed.body_html(0).unwrap(), "<p>html body</p>");
    }

    #[test]
    fn bad_input_is_refused_by_name() {
        let cases: Vec<(SendRequest, &str)> = vec![
            (
                SendRequest {
                    from: None,
                    ..fields()
                },
                "from is required",
            ),
            (
                SendRequest {
                    from: Some("not an address".into()),
                    ..fields()
                },
                "from",
            ),
            (
                SendRequest {
                    to: vec![],
                    cc: vec![],
                    bcc: vec![],
                    ..fields()
                },
                "recipient",
            ),
            (
                SendRequest {
                    subject: Some("a\r\nBcc: victim@x.test".into()),
                    ..fields()
                },
                "line breaks",
            ),
            (
                SendRequest {
                    headers: [("X-A".to_string(), "v\r\nFrom: evil@x.test".to_string())].into(),
                    ..fields()
                },
                "line breaks",
            ),
            (
                SendRequest {
                    headers: [("From".to_string(), "evil@x.test".to_string())].into(),
                    ..fields()
                },
                "own field",
            ),
            (
                SendRequest {
                    headers: [("Bad Name".to_string(), "v".to_string())].into(),
                    ..fields()
                },
                "header name",
            ),
            (
                SendRequest {
                    text: None,
                    ..fields()
                },
                "text, html",
            ),
            (
                SendRequest {
                    attachments: vec![AttachmentSpec {
                        filename: "a".into(),
                        content_type: "text/plain".into(),
                        content_base64: "***".into(),
                    }],
                    ..fields()
                },
                "base64",
            ),
            (
                SendRequest {
                    raw: Some("From: a@acme.test\r\n\r\nx".into()),
                    ..fields()
                },
                "raw is a complete message",
            ),
            (
                SendRequest {
                    raw: Some("From: a@acme.test\nSubject: x\n\nbody\n".into()),
                    from: None,
                    subject: None,
                    text: None,
                    reply_to: None,
                    to: vec![],
                    cc: vec![],
                    bcc: vec![],
                    ..Default::default()
                },
                "no recipients",
            ),
        ];
        for (request, want) in cases {
            let err = compose(&request, "<q@r>").unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert!(err.to_string().contains(want), "{err} lacks {want:?}");
        }
    }

    #[test]
    fn raw_messages_keep_their_bytes_but_not_bcc() {
        let raw = "From: App <app@acme.test>\nTo: a@x.test\nBcc: secret@x.test,\n  other@x.test\n\
                   Subject: raw\n\nline one\n.line two\n";
        let request = SendRequest {
            raw: Some(raw.into()),
            ..Default::default()
        };
        let composed = compose(&request, "<unused@r>").unwrap();
        assert_eq!(composed.mail_from, "app@acme.test");
        assert_eq!(
            composed.recipients,
            ["a@x.test", "secret@x.test", "other@x.test"]
        );
        assert_eq!(
            text(&composed),
            "From: App <app@acme.test>\r\nTo: a@x.test\r\nSubject: raw\r\n\r\nline one\r\n\
             .line two\r\n"
        );
        // Explicit envelope: from and to override the headers.
        let request = SendRequest {
            raw: Some(raw.into()),
            from: Some("bounces@acme.test".into()),
            to: vec!["only@x.test".into()],
            ..Default::default()
        };
        let composed = compose(&request, "<unused@r>").unwrap();
        assert_eq!(composed.mail_from, "bounces@acme.test");
        assert_eq!(composed.recipients, ["only@x.test"]);
    }

    #[test]
    fn line_ends_become_crlf() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\r\nb", b"a\r\nb\r\n"),
            (b"a\rb\r\n", b"a\r\nb\r\n"),
            (b"a\n\nb\r\n", b"a\r\n\r\nb\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(crlf(input), want);
        }
    }
}
