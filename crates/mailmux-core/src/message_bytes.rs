//! A message's bytes, the one place that knows their shape: line endings made CRLF, where the
//! header section ends, which header fields it has. Used by the send API (composing), delivery
//! (the wire and DKIM) and bounces (the returned headers), so all of them agree on where a
//! header section ends and what a line is.
//!
//! Lines end in CRLF in everything mailmux stores; a bare LF (or CR) is still read as a line
//! end, the way receivers read it, so that a message cannot look one way to us and another way
//! to the next hop.

use std::borrow::Cow;

/// `bytes` with every bare CR or LF made CRLF; borrowed when there is none (all that our own
/// listeners accept). What DKIM signs and what goes on the wire are this form.
pub fn crlf_line_endings(bytes: &[u8]) -> Cow<'_, [u8]> {
    if !has_bare_line_ending(bytes) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn has_bare_line_ending(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

/// The length of the header section: its fields with their line ends, without the empty line
/// that ends it. The whole message when there is no empty line (a message of headers only).
pub fn header_section_len(message: &[u8]) -> usize {
    let mut start = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() && line.ends_with(b"\n") {
            return start;
        }
        start += line.len();
    }
    message.len()
}

/// The names of the header fields of `message`, in order, as written (case kept, trailing
/// blanks before the colon removed). Stops at the first empty line; continuation lines and
/// lines without a colon are skipped.
pub fn field_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message[..header_section_len(message)]
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty() && line[0] != b' ' && line[0] != b'\t')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some(line[..colon].trim_ascii_end())
        })
}

/// How many header fields of `message` are named `name` (compared without regard to case).
pub fn count_fields(message: &[u8], name: &str) -> usize {
    field_names(message)
        .filter(|field| field.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_become_crlf_and_crlf_is_borrowed() {
        let table: [(&[u8], &[u8]); 8] = [
            (b"a\r\nb\r\n", b"a\r\nb\r\n"),
            (b"a\nb\n", b"a\r\nb\r\n"),
            (b"a\n.\nb\r\n", b"a\r\n.\r\nb\r\n"),
            (b"a\rb\r\n", b"a\r\nb\r\n"),
            (b"\n", b"\r\n"),
            (b"a\r", b"a\r\n"),
            (b"a\n\nb\r\n", b"a\r\n\r\nb\r\n"),
            (b"", b""),
        ];
        for (input, want) in table {
            assert_eq!(
                &*crlf_line_endings(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert!(matches!(crlf_line_endings(b"x\r\ny\r\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_header_section_ends_before_the_first_empty_line() {
        let table: [(&[u8], usize); 7] = [
            (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", 12),
            (b"A: 1\nB: 2\n\nbody\n", 10),
            (b"A: 1\r\n folded\r\n\r\n", 15),
            (b"A: 1\r\nB: 2\r\n", 12),
            (b"A: 1", 4),
            (b"\r\nbody", 0),
            // A CR alone is not yet an empty line.
            (b"A: 1\r\n\r", 7),
        ];
        for (message, want) in table {
            assert_eq!(
                header_section_len(message),
                want,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn names_come_from_the_header_section_only() {
        let message = b"Received: from a\r\n\tby b\r\nreceived : x\r\nSubject: hi\r\n\
                        Received: y\r\n\r\nReceived: in the body\r\n";
        let names: Vec<&[u8]> = field_names(message).collect();
        assert_eq!(
            names,
            [&b"Received"[..], b"received", b"Subject", b"Received"]
        );
        assert_eq!(count_fields(message, "RECEIVED"), 3);
        assert_eq!(
            count_fields(b"Subject: x\nReceived: y\n\nReceived: z\n", "received"),
            1
        );
        assert_eq!(count_fields(b"", "received"), 0);
        assert_eq!(count_fields(b"\r\nReceived: body\r\n", "received"), 0);
    }
}
