//! Reading the header section of a message as it is stored and sent (CRLF lines, though a
//! bare LF is tolerated): where it ends and which fields it has. Bodies are never looked at.

/// The names of the header fields of `message`, in order, as written (case kept, trailing
/// blanks before the colon removed). Stops at the first empty line; continuation lines and
/// lines without a colon are skipped.
pub fn field_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| line[0] != b' ' && line[0] != b'\t')
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
