//! Bounce messages: RFC 3464 delivery status notifications.
//!
//! One DSN per message and attempt lists every recipient that bounced in it:
//! `multipart/report; report-type=delivery-status` with a human-readable part, the
//! machine-readable `message/delivery-status`, and the original's headers
//! (`text/rfc822-headers`; the whole original is not returned, which keeps a bounce of a large
//! message small and does not mail an attachment back to a possibly forged sender).
//!
//! When the original needed SMTPUTF8 the RFC 6533 forms are used instead
//! (`message/global-delivery-status`, `message/global-headers`, `utf-8;` addresses).

use std::fmt::Write as _;

use mailmux_core::message_bytes::{crlf_line_endings, header_section_len};
use mailmux_core::reply::EnhancedStatus;

/// Longest original header block copied into a DSN; the rest is cut at a line boundary.
const MAX_HEADERS: usize = 256 * 1024;

/// Longest diagnostic kept per recipient (header lines must stay below 998 octets).
const MAX_DIAGNOSTIC: usize = 800;

/// One recipient that bounced.
#[derive(Debug, Clone)]
pub(crate) struct BouncedRecipient {
    pub address: String,
    /// The reply recorded for it: remote (`550 5.1.1 …`) or ours.
    pub reply: String,
    /// The host that gave the reply, when one did.
    pub remote_mta: Option<String>,
}

/// What a DSN is made of.
pub(crate) struct Dsn<'a> {
    /// Our host name (`smtp.hostname`): Reporting-MTA and the MAILER-DAEMON address.
    pub reporting_mta: &'a str,
    /// The original message's queue id.
    pub queue_id: &'a str,
    /// The DSN's own queue id: Message-ID and MIME boundary, so both are unique.
    pub dsn_id: &'a str,
    /// The original's envelope sender, to whom the DSN goes.
    pub sender: &'a str,
    /// The original message (only its header block is used).
    pub original: &'a [u8],
    /// The original needed SMTPUTF8.
    pub smtputf8: bool,
    /// When the original was queued (Unix ms).
    pub arrival_ms: i64,
    pub now_ms: i64,
    pub recipients: &'a [BouncedRecipient],
}

impl Dsn<'_> {
    /// The DSN as a message (CRLF line endings), ready to enqueue.
    pub(crate) fn render(&self) -> Vec<u8> {
        let global = self.smtputf8
            || !self.sender.is_ascii()
            || self.recipients.iter().any(|r| !r.address.is_ascii());
        let boundary = format!("{}/{}", self.dsn_id, self.reporting_mta);
        let date = rfc5322_date(self.now_ms);

        let mut head = String::new();
        let mut line = |text: &str| {
            head.push_str(text);
            head.push_str("\r\n");
        };
        line(&format!(
            "From: Mail Delivery System <MAILER-DAEMON@{}>",
            self.reporting_mta
        ));
        line(&format!("To: <{}>", self.sender));
        line("Subject: Undelivered Mail Returned to Sender");
        line(&format!("Date: {date}"));
        line(&format!(
            "Message-ID: <{}@{}>",
            self.dsn_id, self.reporting_mta
        ));
        // RFC 3834: marks the DSN as automatic, so auto-responders do not answer it.
        line("Auto-Submitted: auto-replied");
        line("MIME-Version: 1.0");
        line("Content-Type: multipart/report; report-type=delivery-status;");
        line(&format!("\tboundary=\"{boundary}\""));
        line("");
        line("This is a MIME-encapsulated message.");
        line("");

        // Part 1: for people.
        line(&format!("--{boundary}"));
        line("Content-Description: Notification");
        if global {
            line("Content-Type: text/plain; charset=utf-8");
            line("Content-Transfer-Encoding: 8bit");
        } else {
            line("Content-Type: text/plain; charset=us-ascii");
        }
        line("");
        line(&format!(
            "This is the mail system at host {}.",
            self.reporting_mta
        ));
        line("");
        line("I'm sorry to have to inform you that your message could not");
        line("be delivered to one or more recipients. Its headers are attached below.");
        line("");
        line("The mail system said:");
        line("");
        for recipient in self.recipients {
            let diagnostic = clip(&recipient.reply, MAX_DIAGNOSTIC);
            match &recipient.remote_mta {
                Some(host) => line(&fold(&format!(
                    "<{}>: host {host} said: {diagnostic}",
                    recipient.address
                ))),
                None => line(&fold(&format!("<{}>: {diagnostic}", recipient.address))),
            }
            line("");
        }

        // Part 2: for programs (RFC 3464 §2).
        line(&format!("--{boundary}"));
        line("Content-Description: Delivery report");
        line(if global {
            "Content-Type: message/global-delivery-status"
        } else {
            "Content-Type: message/delivery-status"
        });
        line("");
        line(&format!("Reporting-MTA: dns; {}", self.reporting_mta));
        line(&format!("X-Mailmux-Queue-ID: {}", self.queue_id));
        line(&format!("Arrival-Date: {}", rfc5322_date(self.arrival_ms)));
        let address_type = if global { "utf-8" } else { "rfc822" };
        for recipient in self.recipients {
            line("");
            line(&format!(
                "Final-Recipient: {address_type}; {}",
                recipient.address
            ));
            line("Action: failed");
            line(&format!("Status: {}", dsn_status(&recipient.reply)));
            if let Some(host) = &recipient.remote_mta {
                line(&format!("Remote-MTA: dns; {host}"));
            }
            line(&fold(&format!(
                "Diagnostic-Code: smtp; {}",
                clip(&recipient.reply, MAX_DIAGNOSTIC)
            )));
            line(&format!("Last-Attempt-Date: {date}"));
        }
        line("");

        // Part 3: the original's headers.
        line(&format!("--{boundary}"));
        line("Content-Description: Undelivered Message Headers");
        line(if global {
            "Content-Type: message/global-headers"
        } else {
            "Content-Type: text/rfc822-headers"
        });
        line("");
        let mut out = head.into_bytes();
        out.extend_from_slice(&header_block(self.original));
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }
}

/// The RFC 3463 status for a recorded reply: the enhanced code in it, else one derived from
/// the reply code, else a generic permanent failure. A message that expired keeps its last
/// temporary reply first (`451 4.7.1 greylisted (gave up after …)`), so it reports that code.
pub(crate) fn dsn_status(reply: &str) -> String {
    if let Some(code) = EnhancedStatus::find_in(reply) {
        return code.to_string();
    }
    match reply.as_bytes().first() {
        Some(b'4') if reply.as_bytes().get(3).is_none_or(|b| *b == b' ') => "4.0.0".into(),
        _ => "5.0.0".into(),
    }
}

/// The original's header block, CRLF-terminated lines, without the blank line after it.
fn header_block(message: &[u8]) -> Vec<u8> {
    let mut headers = &message[..header_section_len(message)];
    if headers.len() > MAX_HEADERS {
        let cut = headers[..MAX_HEADERS]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(MAX_HEADERS, |i| i + 1);
        headers = &headers[..cut];
    }
    // The DSN is CRLF throughout, whatever the original had.
    let mut out = crlf_line_endings(headers).into_owned();
    if !out.ends_with(b"\r\n") && !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Folds a long line at spaces (RFC 5322 §2.2.3), keeping lines near 78 characters.
fn fold(text: &str) -> String {
    const WIDTH: usize = 78;
    let mut out = String::with_capacity(text.len() + 16);
    let mut line_len = 0;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            if line_len + 1 + word.len() > WIDTH && line_len > 0 {
                out.push_str("\r\n ");
                line_len = 1;
            } else {
                out.push(' ');
                line_len += 1;
            }
        }
        let _ = write!(out, "{word}");
        line_len += word.len();
    }
    out
}

/// An RFC 5322 date-time (UTC) for Unix milliseconds; mail-parser already knows the format.
fn rfc5322_date(ms: i64) -> String {
    mail_parser::DateTime::from_timestamp(ms.div_euclid(1000)).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders, PartType};

    const ORIGINAL: &[u8] = b"From: Alice <alice@sender.test>\r\n\
        To: bob@dest.test, carol@dest.test\r\n\
        Subject: quarterly report\r\n\
        Message-ID: <orig-1@sender.test>\r\n\
        \r\n\
        The body is not returned.\r\n";

    fn recipients() -> Vec<BouncedRecipient> {
        vec![
            BouncedRecipient {
                address: "bob@dest.test".into(),
                reply: "550 5.1.1 <bob@dest.test>: Recipient address rejected: User unknown \
                        in virtual mailbox table; please check the spelling and try again later"
                    .into(),
                remote_mta: Some("mx1.dest.test".into()),
            },
            BouncedRecipient {
                address: "carol@nowhere.test".into(),
                reply: "550 5.1.2 nowhere.test: domain does not exist".into(),
                remote_mta: None,
            },
        ]
    }

    fn render(recipients: &[BouncedRecipient], smtputf8: bool) -> Vec<u8> {
        Dsn {
            reporting_mta: "relay.mailmux.test",
            queue_id: "0123456789abcdef0001",
            dsn_id: "0123456789abcdef0002",
            sender: "alice@sender.test",
            original: ORIGINAL,
            smtputf8,
            arrival_ms: 1_700_000_000_000,
            now_ms: 1_700_000_060_000,
            recipients,
        }
        .render()
    }

    /// Field value of `name` in a delivery-status group (unfolded).
    fn field(group: &str, name: &str) -> Option<String> {
        let unfolded = group.replace("\r\n ", " ").replace("\r\n\t", " ");
        let prefix = format!("{name}: ");
        unfolded
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    #[test]
    fn dsn_is_a_delivery_status_report() {
        let bytes = render(&recipients(), false);
        assert!(bytes.is_ascii());
        // Every line ends in CRLF and none is too long for SMTP.
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.replace("\r\n", "").contains('\n'));
        assert!(text.split("\r\n").all(|l| l.len() <= 998));

        let message = MessageParser::default().parse(&bytes).unwrap();
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
        assert_eq!(
            message.message_id(),
            Some("0123456789abcdef0002@relay.mailmux.test")
        );
        assert!(message.date().is_some());
        let content_type = message.content_type().unwrap();
        assert_eq!(content_type.ctype(), "multipart");
        assert_eq!(content_type.subtype(), Some("report"));
        assert_eq!(
            content_type.attribute("report-type"),
            Some("delivery-status")
        );

        // Three parts, in order.
        let PartType::Multipart(children) = &message.parts[0].body else {
            panic!("not multipart: {:?}", message.parts[0].body);
        };
        assert_eq!(children.len(), 3);
        let types: Vec<String> = children
            .iter()
            .map(|&i| {
                let ct = message.parts[i as usize].content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );

        let human = message.body_text(0).unwrap();
        assert!(human.contains("bob@dest.test"), "{human}");
        assert!(human.contains("User unknown"), "{human}");

        // The machine-readable part: one per-message group, one group per recipient.
        let status = String::from_utf8_lossy(message.parts[children[1] as usize].contents());
        let groups: Vec<&str> = status
            .split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .collect();
        assert_eq!(groups.len(), 3, "{status}");
        assert_eq!(
            field(groups[0], "Reporting-MTA").as_deref(),
            Some("dns; relay.mailmux.test")
        );
        assert_eq!(
            field(groups[0], "Arrival-Date").as_deref(),
            Some("Tue, 14 Nov 2023 22:13:20 +0000")
        );
        let bob = groups[1];
        assert_eq!(
            field(bob, "Final-Recipient").as_deref(),
            Some("rfc822; bob@dest.test")
        );
        assert_eq!(field(bob, "Action").as_deref(), Some("failed"));
        assert_eq!(field(bob, "Status").as_deref(), Some("5.1.1"));
        assert_eq!(
            field(bob, "Remote-MTA").as_deref(),
            Some("dns; mx1.dest.test")
        );
        assert_eq!(
            field(bob, "Diagnostic-Code").as_deref(),
            Some(
                "smtp; 550 5.1.1 <bob@dest.test>: Recipient address rejected: User unknown \
                 in virtual mailbox table; please check the spelling and try again later"
            )
        );
        let carol = groups[2];
        assert_eq!(
            field(carol, "Final-Recipient").as_deref(),
            Some("rfc822; carol@nowhere.test")
        );
        assert_eq!(field(carol, "Status").as_deref(), Some("5.1.2"));
        assert_eq!(field(carol, "Remote-MTA"), None);

        // The original's headers, and not its body.
        let headers = String::from_utf8_lossy(message.parts[children[2] as usize].contents());
        assert!(headers.contains("Subject: quarterly report"), "{headers}");
        assert!(headers.contains("Message-ID: <orig-1@sender.test>"));
        assert!(!headers.contains("The body is not returned"));
    }

    #[test]
    fn utf8_originals_get_the_global_forms() {
        let recipients = vec![BouncedRecipient {
            address: "jörg@bücher.test".into(),
            reply: "550 5.1.1 unknown".into(),
            remote_mta: Some("mx.bücher.test".into()),
        }];
        let bytes = render(&recipients, true);
        let message = MessageParser::default().parse(&bytes).unwrap();
        let PartType::Multipart(children) = &message.parts[0].body else {
            panic!("not multipart");
        };
        let subtypes: Vec<&str> = children
            .iter()
            .map(|&i| {
                message.parts[i as usize]
                    .content_type()
                    .unwrap()
                    .subtype()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            subtypes,
            ["plain", "global-delivery-status", "global-headers"]
        );
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("Final-Recipient: utf-8; jörg@bücher.test"));
    }

    #[test]
    fn status_comes_from_the_reply() {
        let table = [
            ("550 5.1.1 user unknown", "5.1.1"),
            ("554 5.6.3 mx does not support 8BITMIME", "5.6.3"),
            ("550 no enhanced code", "5.0.0"),
            ("451 4.4.1 connection refused", "4.4.1"),
            (
                "451 4.7.1 greylisted (gave up after 9 attempts over 120 hours)",
                "4.7.1",
            ),
            (
                "421 busy (gave up after 9 attempts over 120 hours)",
                "4.0.0",
            ),
            ("421 busy", "4.0.0"),
        ];
        for (reply, want) in table {
            assert_eq!(dsn_status(reply), want, "{reply}");
        }
    }

    #[test]
    fn header_block_stops_at_the_blank_line() {
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_block(b"A: 1\nB: 2\n\nbody"), b"A: 1\r\nB: 2\r\n");
        assert_eq!(header_block(b"A: 1"), b"A: 1\r\n");
    }

    #[test]
    fn long_lines_fold_at_spaces() {
        let long = format!("Diagnostic-Code: smtp; 550 {}", "word ".repeat(60));
        let folded = fold(long.trim_end());
        assert!(folded.split("\r\n").all(|l| l.len() <= 78), "{folded}");
        assert_eq!(folded.replace("\r\n ", " "), long.trim_end());
    }
}
