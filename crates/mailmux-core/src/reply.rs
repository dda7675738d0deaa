//! SMTP replies, one type for both sides of the relay: a code, an optional RFC 3463 enhanced
//! status code (parsed, [`EnhancedStatus`]) and one or more lines of text.
//!
//! - The listeners answer every command with one ([`Reply::new`], [`Reply::bare`],
//!   [`Reply::multiline`]); the session buffers them and writes them in order, which is all
//!   pipelining (RFC 2920) needs from that side.
//! - Delivery reads a remote server's answer into one ([`Reply::parse`]), and writes its own
//!   reasons in the same shape (`451 4.4.1 connection refused`), so every recipient outcome is
//!   classified by one rule ([`Reply::recipient_status`]) and stored as one kind of text.
//!
//! Security: reply text carries data from elsewhere (a tenant's status reason, a client's
//! address, a remote server's words); control characters in it become spaces, so it can
//! neither forge extra reply lines on the wire nor inject header lines into a DSN or a log.

use std::fmt;

use crate::Permanence;
use crate::queued::RecipientStatus;

/// `class.subject.detail` (RFC 3463): class 2, 4 or 5, subject and detail 0–999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// `word` if it is shaped like an enhanced status code (each part 1–3 digits).
    pub fn parse(word: &str) -> Option<EnhancedStatus> {
        let mut parts = word.split('.');
        let (Some(class), Some(subject), Some(detail), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let number = |s: &str| {
            (!s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u16>().ok())
                .flatten()
        };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return None,
        };
        Some(EnhancedStatus {
            class,
            subject: number(subject)?,
            detail: number(detail)?,
        })
    }

    /// The first word of `text` shaped like an enhanced status code, searched anywhere so
    /// that a wrapped reply (`relay said: 451 4.2.0 …`) still yields its code.
    pub fn find_in(text: &str) -> Option<EnhancedStatus> {
        text.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
            .find_map(EnhancedStatus::parse)
    }

    /// `2.0.0`, `4.0.0` or `5.0.0` for a reply code without a status of its own.
    pub fn generic(code: u16) -> EnhancedStatus {
        let class = match code / 100 {
            2 => 2,
            4 => 4,
            _ => 5,
        };
        EnhancedStatus {
            class,
            subject: 0,
            detail: 0,
        }
    }

    pub fn class(self) -> u8 {
        self.class
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    /// Absent for the greeting, the EHLO reply and SASL challenges, which RFC 2034 leaves
    /// without one, and for remote replies that carried none.
    status: Option<EnhancedStatus>,
    /// Never empty.
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply of ours with an enhanced status code (`"5.7.1"`, a literal).
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Reply {
        let parsed = EnhancedStatus::parse(status);
        debug_assert!(
            parsed.is_some(),
            "{status:?} is not an enhanced status code"
        );
        Reply {
            code,
            status: Some(parsed.unwrap_or_else(|| EnhancedStatus::generic(code))),
            lines: vec![clean(text.into())],
        }
    }

    /// A one-line reply without an enhanced status code.
    pub fn bare(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines: vec![clean(text.into())],
        }
    }

    /// A multi-line reply without enhanced status code (EHLO, HELP).
    pub fn multiline(code: u16, lines: impl IntoIterator<Item = String>) -> Reply {
        let mut lines: Vec<String> = lines.into_iter().map(clean).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply {
            code,
            status: None,
            lines,
        }
    }

    /// A reply as a remote server sent it (or a reason of ours in that shape): the text,
    /// flattened to one printable line because it ends up in the database, in logs and in DSN
    /// header fields, and its leading enhanced status code, when it has one, parsed out.
    pub fn parse(code: u16, text: impl AsRef<str>) -> Reply {
        let text = one_line(text.as_ref());
        let (first, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match EnhancedStatus::parse(first) {
            Some(status) => Reply {
                code,
                status: Some(status),
                lines: vec![rest.to_string()],
            },
            None => Reply {
                code,
                status: None,
                lines: vec![text],
            },
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code the reply carries, if any.
    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    /// The RFC 3463 status code for this reply: its own, else one found in its text (a
    /// wrapped reply), else the generic one for its class.
    pub fn enhanced_status(&self) -> EnhancedStatus {
        self.status
            .or_else(|| self.lines.iter().find_map(|l| EnhancedStatus::find_in(l)))
            .unwrap_or_else(|| EnhancedStatus::generic(self.code))
    }

    /// The text lines, without code and status.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx and 3xx: the command was taken.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// What this reply means for the recipient it answers: 2xx delivered, 5xx bounced,
    /// anything else (4xx, and replies that make no sense at this point) deferred. Unknown is
    /// deferred rather than bounced: retrying costs little, losing mail costs a lot.
    pub fn recipient_status(&self) -> RecipientStatus {
        match self.code / 100 {
            2 => RecipientStatus::Delivered,
            5 => RecipientStatus::Bounced,
            _ => RecipientStatus::Deferred,
        }
    }

    pub fn permanence(&self) -> Permanence {
        if self.code / 100 == 5 {
            Permanence::Permanent
        } else {
            Permanence::Transient
        }
    }

    /// Appends the wire form (`250-…` continuation lines, `250 …` last line, CRLF each).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            let text = match (self.status, line.is_empty()) {
                (Some(status), true) => status.to_string(),
                (Some(status), false) => format!("{status} {line}"),
                (None, _) => line.clone(),
            };
            out.extend_from_slice(format!("{}{separator}{text}\r\n", self.code).as_bytes());
        }
    }
}

/// `550 5.1.1 text` (lines joined by ` / `): how replies appear in logs, in the queue's
/// per-recipient history and in DSNs.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        let text = self.lines.join(" / ");
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Every control character becomes a space (see the module's note on security).
fn clean(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        text
    }
}

/// Control characters become spaces and runs of spaces collapse: one printable line.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn wire_forms() {
        let cases = [
            (
                Reply::new(250, "2.0.0", "Ok: queued as abc"),
                "250 2.0.0 Ok: queued as abc\r\n",
            ),
            (
                Reply::bare(220, "mx.example ESMTP mailmux"),
                "220 mx.example ESMTP mailmux\r\n",
            ),
            (Reply::bare(334, ""), "334 \r\n"),
            (
                Reply::multiline(250, ["mx.example".into(), "PIPELINING".into()]),
                "250-mx.example\r\n250 PIPELINING\r\n",
            ),
            (
                Reply::new(550, "5.7.1", "suspended: spam\r\n250 forged"),
                "550 5.7.1 suspended: spam  250 forged\r\n",
            ),
            (
                Reply::parse(550, "5.1.1 <bob@x>: user unknown"),
                "550 5.1.1 <bob@x>: user unknown\r\n",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(wire(&reply), want);
        }
    }

    #[test]
    fn status_classification_table() {
        let table = [
            (250, RecipientStatus::Delivered, Permanence::Transient),
            (251, RecipientStatus::Delivered, Permanence::Transient),
            (354, RecipientStatus::Deferred, Permanence::Transient),
            (421, RecipientStatus::Deferred, Permanence::Transient),
            (450, RecipientStatus::Deferred, Permanence::Transient),
            (451, RecipientStatus::Deferred, Permanence::Transient),
            (452, RecipientStatus::Deferred, Permanence::Transient),
            (500, RecipientStatus::Bounced, Permanence::Permanent),
            (550, RecipientStatus::Bounced, Permanence::Permanent),
            (553, RecipientStatus::Bounced, Permanence::Permanent),
            (554, RecipientStatus::Bounced, Permanence::Permanent),
            (556, RecipientStatus::Bounced, Permanence::Permanent),
            (100, RecipientStatus::Deferred, Permanence::Transient),
            (699, RecipientStatus::Deferred, Permanence::Transient),
        ];
        for (code, status, permanence) in table {
            let reply = Reply::parse(code, "x");
            assert_eq!(reply.recipient_status(), status, "{code}");
            assert_eq!(reply.permanence(), permanence, "{code}");
        }
    }

    #[test]
    fn enhanced_status_is_parsed_found_or_derived() {
        let table = [
            (550, "5.1.1 <bob@x>: user unknown", "5.1.1", true),
            (451, "4.7.1 try later", "4.7.1", true),
            (550, "user unknown", "5.0.0", false),
            (421, "", "4.0.0", false),
            (550, "relay said: 451 4.2.0 busy", "4.2.0", false),
            (556, "5.1.10 null MX", "5.1.10", true),
            (550, "version 1.2.3.4 nope", "5.0.0", false),
            (550, "6.1.1 not a class", "5.0.0", false),
            (550, "5.1.1000 too long", "5.0.0", false),
        ];
        for (code, text, want, leading) in table {
            let reply = Reply::parse(code, text);
            assert_eq!(reply.enhanced_status().to_string(), want, "{text}");
            assert_eq!(reply.status().is_some(), leading, "{text}");
        }
        assert_eq!(
            EnhancedStatus::parse("4.4.1"),
            Some(EnhancedStatus {
                class: 4,
                subject: 4,
                detail: 1
            })
        );
    }

    #[test]
    fn text_is_one_line_and_displayed_whole() {
        let reply = Reply::parse(550, "5.1.1 bad\r\nInjected: header\t x ");
        assert_eq!(reply.to_string(), "550 5.1.1 bad Injected: header x");
        assert_eq!(reply.lines(), ["bad Injected: header x"]);
        assert_eq!(Reply::parse(421, "").to_string(), "421");
        assert_eq!(Reply::parse(421, "4.4.2").to_string(), "421 4.4.2");
        assert_eq!(
            Reply::new(451, "4.7.1", "slow down").to_string(),
            "451 4.7.1 slow down"
        );
    }
}
