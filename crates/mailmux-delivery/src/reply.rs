//! An SMTP reply as delivery sees it: the remote server's answer to one of our commands, or a
//! reason of our own written in the same shape (`451 4.4.1 connection refused`), so that every
//! recipient outcome is classified by one rule and stored as one kind of text.

use std::fmt;

use mailmux_core::Permanence;
use mailmux_store::RecipientStatus;

/// A reply code and the text after it (which starts with the RFC 3463 enhanced status code
/// when the server sent one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// A reply; the text is flattened to one printable line because it ends up in the
    /// database, in logs and in DSN header fields.
    pub fn new(code: u16, text: impl AsRef<str>) -> Reply {
        Reply {
            code,
            text: one_line(text.as_ref()),
        }
    }

    /// What this reply means for the recipient it answers: 2xx delivered, 5xx bounced,
    /// anything else (4xx, and replies that make no sense at this point) deferred. Unknown is
    /// deferred rather than bounced: retrying costs little, losing mail costs a lot.
    pub fn status(&self) -> RecipientStatus {
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

    /// The RFC 3463 status code (`5.1.1`): the one in the text when there is one, else the
    /// generic one for the reply's class.
    pub fn enhanced_status(&self) -> String {
        enhanced_status_in(&self.text)
            .map(str::to_string)
            .unwrap_or_else(|| match self.code / 100 {
                2 => "2.0.0".to_string(),
                4 => "4.0.0".to_string(),
                _ => "5.0.0".to_string(),
            })
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.text)
        }
    }
}

/// The first word of `text` shaped like an enhanced status code (`class.subject.detail`,
/// class 2, 4 or 5, each part 1-3 digits), searched anywhere so that a wrapped reply
/// (`relay said: 451 4.2.0 …`) still yields its code.
pub fn enhanced_status_in(text: &str) -> Option<&str> {
    text.split(|c: char| c.is_whitespace() || c == ';' || c == ',')
        .find(|word| is_enhanced_status(word))
}

fn is_enhanced_status(word: &str) -> bool {
    let mut parts = word.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)
}

/// Control characters (CR, LF, TAB, NUL…) become spaces and runs of spaces collapse: a reply
/// must never be able to inject a header line into a DSN or a line into a log.
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
            let reply = Reply::new(code, "x");
            assert_eq!(reply.status(), status, "{code}");
            assert_eq!(reply.permanence(), permanence, "{code}");
        }
    }

    #[test]
    fn enhanced_status_is_found_or_derived() {
        let table = [
            (550, "5.1.1 <bob@x>: user unknown", "5.1.1"),
            (451, "4.7.1 try later", "4.7.1"),
            (550, "user unknown", "5.0.0"),
            (421, "", "4.0.0"),
            (550, "relay said: 451 4.2.0 busy", "4.2.0"),
            (556, "5.1.10 null MX", "5.1.10"),
            (550, "version 1.2.3.4 nope", "5.0.0"),
            (550, "6.1.1 not a class", "5.0.0"),
        ];
        for (code, text, want) in table {
            assert_eq!(Reply::new(code, text).enhanced_status(), want, "{text}");
        }
    }

    #[test]
    fn text_is_one_line() {
        let reply = Reply::new(550, "5.1.1 bad\r\nInjected: header\t x ");
        assert_eq!(reply.to_string(), "550 5.1.1 bad Injected: header x");
        assert_eq!(Reply::new(421, "").to_string(), "421");
    }
}
