//! SMTP replies: a code, an optional enhanced status code (RFC 3463) and one or more lines of
//! text. Every handler answers with a [`Reply`]; the session buffers them and writes them in
//! order, which is all pipelining (RFC 2920) needs from this side.

use std::fmt;

/// One SMTP reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    /// `x.y.z`; absent for the greeting, the EHLO reply and SASL challenges, which RFC 2034
    /// leaves without one.
    status: Option<&'static str>,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
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

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<&'static str> {
        self.status
    }

    /// The text lines, without code and status.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx and 3xx: the command was taken.
    pub fn is_positive(&self) -> bool {
        self.code < 400
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

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

/// Security: reply text can carry data from the store (a tenant's status reason) or from the
/// client (an address); a CR or LF in it would let that data forge extra reply lines, so every
/// control character becomes a space.
fn clean(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        text
    }
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
        ];
        for (reply, want) in cases {
            assert_eq!(wire(&reply), want);
        }
    }
}
