//! Lines over 998 octets (RFC 5322 §2.1.1) in a submitted message, made deliverable instead of
//! refused: the MIME entity that holds them is re-encoded so that no line is longer than 76
//! characters, and nothing else changes. Applications write such lines all the time (minified
//! HTML, one-line JSON, a paragraph without breaks); a relay that passes them on gets them
//! refused or silently wrapped by the next hop, and a wrapped line breaks the DKIM signature
//! made over it. Since DKIM signs what is stored, re-encoding at acceptance keeps signatures
//! valid.
//!
//! How, entity by entity (the message itself is the first):
//! - an entity without a long line is copied byte for byte (other parts stay untouched);
//! - a header line over the limit cannot be re-encoded without changing what it says: refused;
//! - `multipart/*`: the parts between its boundary lines are handled one by one (preamble and
//!   epilogue must not hold long lines: there is no part to re-encode them in);
//! - `message/rfc822` (and `message/global`): its body is a message, handled the same way;
//! - any other part: identity-encoded (`7bit`, `8bit`, `binary`, none) or quoted-printable
//!   content becomes quoted-printable, its `Content-Transfer-Encoding` field replaced
//!   (`MIME-Version: 1.0` added to a message that had none, so that the field means something);
//!   base64 is only re-wrapped (its characters are kept, the lines made 76 long); other
//!   encodings are refused.
//!
//! Where the header section ends is [`mailmux_core::message_bytes`]'s rule; the fields
//! (`Content-Type` with its boundary, the transfer encoding) are read by mail-parser. The walk
//! is our own because it must give back the exact bytes of every part it does not change.
//!
//! Over 600 lines with its tests, on purpose: the walk and the two encoders are one algorithm,
//! and the tests are the table of MIME shapes it must survive.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders};
use mailmux_core::message_bytes::header_section_len;
use mailmux_core::reply::Reply;

use crate::content::MAX_LINE;
use crate::verdict::{Refusal, RejectReason};

/// Lines of quoted-printable and re-wrapped base64: RFC 2045's 76 characters.
const ENCODED_LINE: usize = 76;

/// MIME nesting deeper than this is refused rather than walked (a message built to make the
/// walk expensive).
const MAX_DEPTH: usize = 32;

/// Why a message with long lines could not be re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfixable {
    /// A header line (of the message or of a part) is over the limit.
    HeaderLine,
    /// The long line is in a multipart's preamble or epilogue, or in a multipart without any
    /// boundary line.
    OutsideParts,
    /// The part's transfer encoding is one we do not re-encode from.
    Encoding(String),
    /// MIME nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl Unfixable {
    /// `554 5.6.0`, like every content refusal, saying which line could not be fixed.
    pub fn refusal(&self) -> Refusal {
        let why = match self {
            Unfixable::HeaderLine => "a header line is longer than 998 characters; fold it \
                                      (RFC 5322 §2.2.3)"
                .to_string(),
            Unfixable::OutsideParts => {
                "a line longer than 998 characters outside any MIME part".to_string()
            }
            Unfixable::Encoding(cte) => format!(
                "a line longer than 998 characters in a part with Content-Transfer-Encoding \
                 {cte}, which cannot be re-encoded"
            ),
            Unfixable::TooDeep => {
                format!("MIME parts nested deeper than {MAX_DEPTH} levels around a long line")
            }
        };
        Refusal::new(
            RejectReason::Content,
            Reply::new(554, "5.6.0", format!("Message refused: {why}")),
        )
    }
}

/// `message` with every entity that holds a line over 998 octets re-encoded; borrowed when no
/// line is that long. Lines end in CRLF (the content checks refuse anything else first).
pub fn reencode(message: &[u8]) -> Result<Cow<'_, [u8]>, Unfixable> {
    if !has_long_line(message) {
        return Ok(Cow::Borrowed(message));
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 16);
    entity(message, Kind::Message, 0, &mut out)?;
    Ok(Cow::Owned(out))
}

/// What an entity is when its own fields do not say: a message, a part (text/plain), or a part
/// of a multipart/digest (message/rfc822).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Part,
    DigestPart,
}

fn has_long_line(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line).len() > MAX_LINE)
}

/// The fields of an entity that decide how it is walked.
struct Fields {
    /// Lowercase `type/subtype`; `None` when there is no (readable) Content-Type.
    mime_type: Option<String>,
    boundary: Option<String>,
    /// Lowercase, trimmed.
    encoding: Option<String>,
    has_mime_version: bool,
}

impl Fields {
    fn read(head: &[u8]) -> Fields {
        let Some(parsed) = MessageParser::new().parse_headers(head) else {
            return Fields {
                mime_type: None,
                boundary: None,
                encoding: None,
                has_mime_version: false,
            };
        };
        let content_type = parsed.content_type();
        Fields {
            mime_type: content_type.map(|ct| {
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")).to_ascii_lowercase()
            }),
            boundary: content_type
                .and_then(|ct| ct.attribute("boundary"))
                .map(str::to_string),
            encoding: parsed
                .content_transfer_encoding()
                .map(|e| e.trim().to_ascii_lowercase()),
            has_mime_version: parsed
                .header(mail_parser::HeaderName::MimeVersion)
                .is_some(),
        }
    }
}

fn entity(bytes: &[u8], kind: Kind, depth: usize, out: &mut Vec<u8>) -> Result<(), Unfixable> {
    if !has_long_line(bytes) {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(Unfixable::TooDeep);
    }
    let (head, rest) = bytes.split_at(header_section_len(bytes));
    if has_long_line(head) {
        return Err(Unfixable::HeaderLine);
    }
    // What follows the header section: the empty line, then the body.
    let blank = if rest.starts_with(b"\r\n") {
        2
    } else {
        usize::from(rest.starts_with(b"\n"))
    };
    let (blank, body) = rest.split_at(blank);
    let fields = Fields::read(head);
    let mime_type = fields.mime_type.as_deref().unwrap_or(match kind {
        Kind::DigestPart => "message/rfc822",
        Kind::Message | Kind::Part => "text/plain",
    });
    if mime_type.starts_with("multipart/") {
        let Some(boundary) = fields.boundary.as_deref().filter(|b| !b.is_empty()) else {
            return Err(Unfixable::OutsideParts);
        };
        out.extend_from_slice(head);
        out.extend_from_slice(blank);
        let inner = if mime_type == "multipart/digest" {
            Kind::DigestPart
        } else {
            Kind::Part
        };
        return multipart(body, boundary, inner, depth, out);
    }
    if mime_type == "message/rfc822" || mime_type == "message/global" {
        out.extend_from_slice(head);
        out.extend_from_slice(blank);
        return entity(body, Kind::Message, depth + 1, out);
    }
    leaf(head, body, &fields, kind, out)
}

/// A multipart body: preamble, parts between delimiter lines, epilogue. The CRLF before a
/// delimiter line belongs to the delimiter (RFC 2046 §5.1.1), so a part is what lies between
/// them without that CRLF.
fn multipart(
    body: &[u8],
    boundary: &str,
    inner: Kind,
    depth: usize,
    out: &mut Vec<u8>,
) -> Result<(), Unfixable> {
    let mut segment_start = 0;
    let mut pos = 0;
    let mut first = true;
    let mut closed = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let line_start = pos;
        pos += line.len();
        if closed {
            continue;
        }
        let Some(close) = delimiter(line, boundary) else {
            continue;
        };
        let segment = &body[segment_start..line_start];
        if first {
            // The preamble: nothing in it is shown, and nothing can be re-encoded.
            if has_long_line(segment) {
                return Err(Unfixable::OutsideParts);
            }
            out.extend_from_slice(segment);
            first = false;
        } else {
            part(segment, inner, depth, out)?;
        }
        out.extend_from_slice(line);
        segment_start = pos;
        closed = close;
    }
    let rest = &body[segment_start..];
    if first || closed {
        // No delimiter at all, or the epilogue after the closing one.
        if has_long_line(rest) {
            return Err(Unfixable::OutsideParts);
        }
        out.extend_from_slice(rest);
        Ok(())
    } else {
        // No closing delimiter: the last part runs to the end (as receivers read it).
        entity(rest, inner, depth + 1, out)
    }
}

fn part(segment: &[u8], kind: Kind, depth: usize, out: &mut Vec<u8>) -> Result<(), Unfixable> {
    match segment.strip_suffix(b"\r\n") {
        Some(content) => {
            entity(content, kind, depth + 1, out)?;
            out.extend_from_slice(b"\r\n");
            Ok(())
        }
        None => entity(segment, kind, depth + 1, out),
    }
}

/// `Some(is_close)` when `line` is a delimiter line of `boundary`: `--boundary` or
/// `--boundary--`, then only transport padding (blanks) before the line end.
fn delimiter(line: &[u8], boundary: &str) -> Option<bool> {
    let rest = line
        .strip_prefix(b"--")?
        .strip_prefix(boundary.as_bytes())?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    rest.iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// A part that is not a container: re-encoded by its transfer encoding.
fn leaf(
    head: &[u8],
    body: &[u8],
    fields: &Fields,
    kind: Kind,
    out: &mut Vec<u8>,
) -> Result<(), Unfixable> {
    match fields.encoding.as_deref() {
        Some("base64") => {
            // The characters are kept, only the lines change: nothing to decode, and
            // whatever the part holds is delivered exactly as it was written.
            out.extend_from_slice(head);
            out.extend_from_slice(b"\r\n");
            rewrap_base64(body, out);
            Ok(())
        }
        None | Some("7bit" | "8bit" | "binary" | "quoted-printable") => {
            let decoded = match fields.encoding.as_deref() {
                Some("quoted-printable") => Cow::Owned(qp_decode(body)),
                _ => Cow::Borrowed(body),
            };
            out.extend_from_slice(&without_field(head, b"content-transfer-encoding"));
            if kind == Kind::Message && !fields.has_mime_version {
                out.extend_from_slice(b"MIME-Version: 1.0\r\n");
                if fields.mime_type.is_none()
                    && !decoded.is_ascii()
                    && std::str::from_utf8(&decoded).is_ok()
                {
                    // Unlabelled 8-bit text was read by guessing; once encoded, the default
                    // charset (US-ASCII) would be taken at its word.
                    out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
                }
            }
            out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
            qp_encode(&decoded, out);
            Ok(())
        }
        Some(other) => Err(Unfixable::Encoding(other.to_string())),
    }
}

/// The header section without the fields named `name` (lowercase), continuation lines
/// included; ends in CRLF unless empty.
fn without_field(head: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    let mut dropping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            dropping = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| line[..colon].trim_ascii_end().eq_ignore_ascii_case(name));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn rewrap_base64(body: &[u8], out: &mut Vec<u8>) {
    let chars: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    for line in chars.chunks(ENCODED_LINE) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// Quoted-printable (RFC 2045 §6.7): CRLF line ends stay hard line breaks; lines are at most 76
/// characters, soft breaks (`=` CRLF) included; blanks at a line's end are encoded so that no
/// transport can strip them.
pub fn qp_encode(data: &[u8], out: &mut Vec<u8>) {
    let mut lines = data.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last_line = lines.peek().is_none();
        let (line, hard_break) = match line.strip_suffix(b"\r") {
            Some(line) if !last_line => (line, true),
            _ => (line, !last_line),
        };
        let mut column = 0;
        for (i, &byte) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal = match byte {
                b'=' => false,
                b' ' | b'\t' => !at_end,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // Room for the `=` of a soft break, unless this is the line's last character.
            if column + width > ENCODED_LINE - 1 && !(at_end && column + width <= ENCODED_LINE) {
                out.extend_from_slice(b"=\r\n");
                column = 0;
            }
            if literal {
                out.push(byte);
            } else {
                out.extend_from_slice(format!("={byte:02X}").as_bytes());
            }
            column += width;
        }
        if hard_break {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Decodes quoted-printable leniently, the way receivers do: `=XX` is a byte, `=` at a line's
/// end a soft break, blanks before a line end are padding; anything else is kept as it is.
pub fn qp_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut lines = data.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let hard_break = lines.peek().is_some();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = line.trim_ascii_end();
        let (line, soft) = match line.strip_suffix(b"=") {
            Some(line) => (line, true),
            None => (line, false),
        };
        let mut i = 0;
        while i < line.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (line[i], line.get(i + 1), line.get(i + 2)) {
                (b'=', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                    let value = hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0);
                    out.push(value as u8);
                    i += 3;
                }
                (byte, ..) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        if hard_break && !soft {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn long_text() -> String {
        format!("{}Grüße = done\t", "lorem ipsum ".repeat(120))
    }

    fn lines_fit(message: &[u8]) {
        assert!(!has_long_line(message), "a long line is left");
    }

    #[test]
    fn messages_without_long_lines_are_borrowed() {
        let message = b"Subject: x\r\n\r\nshort\r\n";
        assert!(matches!(reencode(message), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn single_part_text_becomes_quoted_printable() {
        let text = format!("first\r\n{}\r\nlast\r\n", long_text());
        let message = format!(
            "From: a@acme.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{text}"
        );
        let out = reencode(message.as_bytes()).unwrap().into_owned();
        lines_fit(&out);
        let out_text = String::from_utf8(out.clone()).unwrap();
        assert!(out_text.starts_with(
            "From: a@acme.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\nfirst\r\n"
        ));
        assert_eq!(out_text.matches("Content-Transfer-Encoding").count(), 1);
        let parsed = MessageParser::new().parse(&out).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), text);
    }

    #[test]
    fn a_plain_rfc5322_message_gets_mime_fields() {
        let text = format!("{}\r\n", long_text());
        let message = format!("From: a@acme.test\r\nSubject: s\r\n\r\n{text}");
        let out = reencode(message.as_bytes()).unwrap().into_owned();
        lines_fit(&out);
        let out_text = String::from_utf8(out.clone()).unwrap();
        assert!(
            out_text.contains(
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            ),
            "{out_text}"
        );
        assert_eq!(
            qp_decode(out_text.split("\r\n\r\n").nth(1).unwrap().as_bytes()),
            text.as_bytes()
        );
    }

    #[test]
    fn multipart_keeps_its_structure_and_untouched_parts() {
        let text = format!("{}\r\n", long_text());
        let base64_part = "Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                           iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk\r\n";
        let html_part = "Content-Type: text/html\r\n\r\n<p>short</p>\r\n";
        let message = format!(
            "From: a@acme.test\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
             preamble\r\n--outer\r\n\
             Content-Type: multipart/alternative; boundary=inner\r\n\r\n\
             --inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\
             --inner\r\n{html_part}--inner--\r\n\
             --outer\r\n{base64_part}--outer--\r\nepilogue\r\n"
        );
        let out = reencode(message.as_bytes()).unwrap().into_owned();
        lines_fit(&out);
        let out_text = String::from_utf8(out.clone()).unwrap();
        // The other parts, byte for byte, and the structure around them.
        assert!(out_text.contains(&format!("--inner\r\n{html_part}--inner--\r\n--outer\r\n{base64_part}--outer--\r\nepilogue\r\n")), "{out_text}");
        assert!(out_text.contains("preamble\r\n--outer\r\n"));
        assert!(out_text.contains(
            "--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        ));
        assert!(!out_text.contains("MIME-Version: 1.0\r\nMIME-Version"));
        let parsed = MessageParser::new().parse(&out).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), long_text());
        assert_eq!(parsed.body_html(0).unwrap(), "<p>short</p>");
        assert_eq!(parsed.attachment_count(), 1);
    }

    #[test]
    fn quoted_printable_with_long_lines_is_encoded_again() {
        // A broken encoder's output: valid escapes, but no soft breaks.
        let original = format!("{}caf\u{e9} =\r\n", "x".repeat(1200));
        let mut broken = String::new();
        for c in original.trim_end_matches("\r\n").chars() {
            match c {
                '\u{e9}' => broken.push_str("=C3=A9"),
                '=' => broken.push_str("=3D"),
                c => broken.push(c),
            }
        }
        let message = format!(
            "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n{broken}\r\n"
        );
        let out = reencode(message.as_bytes()).unwrap().into_owned();
        lines_fit(&out);
        let parsed = MessageParser::new().parse(&out).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), original);
    }

    #[test]
    fn base64_with_long_lines_is_rewrapped() {
        let encoded = "QUJD".repeat(400);
        let message = format!(
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
             \r\n{encoded}\r\n"
        );
        let out = reencode(message.as_bytes()).unwrap().into_owned();
        lines_fit(&out);
        let parsed = MessageParser::new().parse(&out).unwrap();
        assert_eq!(
            parsed.part(0).unwrap().contents(),
            "ABC".repeat(400).as_bytes()
        );
        let body = String::from_utf8(out).unwrap();
        assert_eq!(
            body.split("\r\n\r\n").nth(1).unwrap().replace("\r\n", ""),
            encoded
        );
    }

    #[test]
    fn what_cannot_be_reencoded_is_refused_with_its_reason() {
        let long = "y".repeat(MAX_LINE + 1);
        let cases = [
            (
                format!("Subject: {long}\r\n\r\nbody\r\n"),
                Unfixable::HeaderLine,
            ),
            (
                format!(
                    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nX-Part: {long}\r\n\r\nx\r\n--b--\r\n"
                ),
                Unfixable::HeaderLine,
            ),
            (
                format!(
                    "Content-Type: multipart/mixed; boundary=b\r\n\r\n{long}\r\n--b\r\n\r\nx\r\n--b--\r\n"
                ),
                Unfixable::OutsideParts,
            ),
            (
                format!("Content-Type: multipart/mixed; boundary=b\r\n\r\nno parts {long}\r\n"),
                Unfixable::OutsideParts,
            ),
            (
                format!("Content-Transfer-Encoding: x-uuencode\r\n\r\n{long}\r\n"),
                Unfixable::Encoding("x-uuencode".into()),
            ),
        ];
        for (message, want) in cases {
            assert_eq!(
                reencode(message.as_bytes()).unwrap_err(),
                want,
                "{message:.80}"
            );
        }
        let reply = Unfixable::HeaderLine.refusal().reply;
        assert_eq!(
            (
                reply.code(),
                reply.status().map(|s| s.to_string()).as_deref()
            ),
            (554, Some("5.6.0"))
        );
        assert!(reply.lines()[0].contains("header line"));
    }

    #[test]
    fn quoted_printable_round_trips() {
        let accents = "\u{e9}".repeat(100);
        let cases: [&[u8]; 6] = [
            b"",
            b"plain\r\n",
            b"trailing blanks \t\r\nnext\r\n",
            b"=\xff\x00 . \r\n",
            b"no final line end",
            accents.as_bytes(),
        ];
        for data in cases {
            let mut encoded = Vec::new();
            qp_encode(data, &mut encoded);
            for line in encoded.split(|&b| b == b'\n') {
                assert!(
                    line.len() <= ENCODED_LINE + 1,
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
            }
            assert_eq!(
                qp_decode(&encoded),
                data,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // Every split point of a line of escapes: a soft break never cuts one.
        for n in 70..80 {
            let data = vec![0xffu8; n];
            let mut encoded = Vec::new();
            qp_encode(&data, &mut encoded);
            assert_eq!(qp_decode(&encoded), data);
        }
    }
}
