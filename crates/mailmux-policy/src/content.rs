//! Checks on the bytes of a message, made once it is complete (end of DATA, an API send). A message must be
//! made of CRLF-terminated lines of at most 998 characters without NUL (RFC 5322 §2.1.1,
//! §2.3). Bare CR and bare LF matter most: another server may read them as line ends, and a
//! `.` after one is how SMTP smuggling hides a second message inside the first; refusing them
//! here means we never relay such a message onwards.
use mailmux_core::reply::Reply;

use crate::verdict::{Refusal, RejectReason};

/// RFC 5322 §2.1.1: at most 998 characters per line, not counting CRLF.
pub const MAX_LINE: usize = 998;

/// What was wrong with the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    BareLf,
    BareCr,
    Nul,
    LongLine,
}

impl Problem {
    pub fn reply(self) -> Reply {
        let why = match self {
            Problem::BareLf => "a bare LF (line feed without carriage return)",
            Problem::BareCr => "a bare CR (carriage return without line feed)",
            Problem::Nul => "a NUL byte",
            Problem::LongLine => "a line longer than 998 characters",
        };
        Reply::new(
            554,
            "5.6.0",
            format!("Message refused: it contains {why}; lines must end with CRLF (RFC 5322)"),
        )
    }
}

/// What the scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// The first problem by severity (smuggling-related first), if any.
    pub problem: Option<Problem>,
    /// Bytes above 127 seen (the message needs an 8-bit path).
    pub eight_bit: bool,
}

/// [`scan`], with a problem as the refusal it is answered with (`554 5.6.0`).
pub fn check(body: &[u8]) -> Result<Scan, Refusal> {
    verdict(scan(body))
}

/// A scan's problem as the refusal it is answered with (`554 5.6.0`).
pub fn verdict(scan: Scan) -> Result<Scan, Refusal> {
    match scan.problem {
        Some(problem) => Err(Refusal::new(RejectReason::Content, problem.reply())),
        None => Ok(scan),
    }
}

pub fn scan(body: &[u8]) -> Scan {
    let (mut bare_lf, mut bare_cr, mut nul, mut long_line) = (false, false, false, false);
    let mut line_start = 0;
    let mut i = 0;
    while let Some(offset) = memchr::memchr3(b'\r', b'\n', 0, &body[i..]) {
        let at = i + offset;
        match body[at] {
            b'\r' if body.get(at + 1) == Some(&b'\n') => {
                long_line |= at - line_start > MAX_LINE;
                line_start = at + 2;
                i = at + 2;
                continue;
            }
            b'\r' => bare_cr = true,
            b'\n' => bare_lf = true,
            _ => nul = true,
        }
        i = at + 1;
    }
    long_line |= body.len() - line_start > MAX_LINE;
    let problem = [
        (bare_lf, Problem::BareLf),
        (bare_cr, Problem::BareCr),
        (nul, Problem::Nul),
        (long_line, Problem::LongLine),
    ]
    .into_iter()
    .find_map(|(found, problem)| found.then_some(problem));
    Scan {
        problem,
        eight_bit: !body.is_ascii(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_table() {
        let long = format!("{}\r\n", "x".repeat(MAX_LINE + 1));
        let just_fits = format!("{}\r\n", "x".repeat(MAX_LINE));
        let several = format!("{long}a\nb");
        let cases: [(&[u8], Option<Problem>); 10] = [
            (b"Subject: hi\r\n\r\nbody\r\n", None),
            (b"", None),
            (b"a\nb\r\n", Some(Problem::BareLf)),
            (b"a\rb\r\n", Some(Problem::BareCr)),
            (b"a\r", Some(Problem::BareCr)),
            (b"a\0b\r\n", Some(Problem::Nul)),
            (long.as_bytes(), Some(Problem::LongLine)),
            (just_fits.as_bytes(), None),
            (b"a\r\r\n", Some(Problem::BareCr)),
            // Several problems: the smuggling-related one is named.
            (several.as_bytes(), Some(Problem::BareLf)),
        ];
        for (body, want) in cases {
            assert_eq!(
                scan(body).problem,
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(scan("Subject: é\r\n".as_bytes()).eight_bit);
        assert!(!scan(b"Subject: e\r\n").eight_bit);
    }

    #[test]
    fn replies_name_the_problem() {
        let reply = Problem::BareLf.reply();
        assert_eq!(
            (
                reply.code(),
                reply.status().map(|s| s.to_string()).as_deref()
            ),
            (554, Some("5.6.0"))
        );
        assert!(reply.lines()[0].contains("bare LF"));
        assert!(Problem::Nul.reply().lines()[0].contains("NUL"));
    }
}
