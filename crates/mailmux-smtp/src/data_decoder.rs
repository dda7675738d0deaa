//! The DATA body decoder: finds the end of the message and undoes dot-stuffing. Sans-I/O: it
//! takes bytes and hands back content, so it is tested by feeding the same input in chunks of
//! every size.
//!
//! Why not smtp-proto's `DataReceiver`: it also ends DATA at `CRLF . CR CR LF` (any run of CRs
//! before the LF), which is not an end-of-data for a sender that follows RFC 5321; a message
//! carrying that sequence would end early here and its remainder would run as SMTP commands
//! (SMTP smuggling). It also starts without a preceding CRLF, so an empty message (`.` as the
//! first line) never ends and a stuffed first line keeps its dot. Here only `CRLF . CRLF` ends
//! the data, counting the CRLF that ended the DATA command line.

/// Where the decoder stands in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Right after CRLF: a dot here is either stuffing or the start of the terminator.
    LineStart,
    /// A dot at the start of a line, held back.
    Dot,
    /// `.` CR at the start of a line, CR held back: an LF now ends the data.
    DotCr,
    /// Inside a line (a bare LF does not start a new one).
    Text,
    /// After a CR inside a line.
    Cr,
}

/// Decodes one DATA body.
#[derive(Debug)]
pub struct DataDecoder {
    position: Position,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            position: Position::LineStart,
        }
    }
}

impl DataDecoder {
    /// Consumes bytes from `input`, appending the unstuffed content to `out`. Returns how many
    /// bytes were consumed and whether the terminator was among them; bytes after the
    /// terminator (pipelined commands) are left unconsumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.position == Position::Text {
                // Fast path: inside a line only a CR can change anything.
                match memchr::memchr(b'\r', &input[i..]) {
                    None => {
                        out.extend_from_slice(&input[i..]);
                        return (input.len(), false);
                    }
                    Some(offset) => {
                        out.extend_from_slice(&input[i..i + offset]);
                        i += offset;
                    }
                }
            }
            let byte = input[i];
            i += 1;
            self.position = match (self.position, byte) {
                (Position::LineStart, b'.') => Position::Dot,
                (Position::Dot, b'\r') => Position::DotCr,
                (Position::DotCr, b'\n') => return (i, true),
                (Position::DotCr, byte) => {
                    // `.` CR then anything but LF: the dot was stuffing, the CR is content.
                    out.push(b'\r');
                    out.push(byte);
                    if byte == b'\r' {
                        Position::Cr
                    } else {
                        Position::Text
                    }
                }
                (_, b'\r') => {
                    out.push(byte);
                    Position::Cr
                }
                (Position::Cr, b'\n') => {
                    out.push(byte);
                    Position::LineStart
                }
                (_, byte) => {
                    out.push(byte);
                    Position::Text
                }
            };
        }
        (input.len(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `size`; returns the content and what was left after the end.
    fn decode(input: &[u8], size: usize) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut decoder = DataDecoder::default();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < input.len() {
            let end = (offset + size).min(input.len());
            let (used, done) = decoder.feed(&input[offset..end], &mut out);
            offset += used;
            if done {
                return Some((out, input[offset..].to_vec()));
            }
        }
        None
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_in_chunks_of_every_size() {
        // (input, Some((content, left after the end)) or None: the data has not ended)
        type Case = (&'static [u8], Option<(&'static [u8], &'static [u8])>);
        let cases: [Case; 14] = [
            (b"hi\r\n.\r\nQUIT\r\n", Some((b"hi\r\n", b"QUIT\r\n"))),
            (b".\r\n", Some((b"", b""))),
            (b"..x\r\n.\r\n", Some((b".x\r\n", b""))),
            (b"a\r\n..\r\n...\r\n.\r\n", Some((b"a\r\n.\r\n..\r\n", b""))),
            // Smuggling attempts: none of these may end the data.
            (b"a\n.\nMAIL FROM:<x@y>\r\n", None),
            (b"a\r\n.\rMAIL FROM:<x@y>\r\n", None),
            (b"a\n.\r\nMAIL FROM:<x@y>\r\n", None),
            (b"a\r.\r\nMAIL FROM:<x@y>\r\n", None),
            (b"a\r\n.\r\r\nMAIL FROM:<x@y>\r\n", None),
            (b"a\r\n.\0\r\nMAIL FROM:<x@y>\r\n", None),
            (b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n", None),
            // ...and the real end after them is still found, with the oddities kept as
            // content for the content check to refuse.
            (b"a\n.\nb\r\n.\r\n", Some((b"a\n.\nb\r\n", b""))),
            (b"a\r\n.\rb\r\n.\r\n", Some((b"a\r\n\rb\r\n", b""))),
            (b"a\r\n.\r\r\nb\r\n.\r\n", Some((b"a\r\n\r\r\nb\r\n", b""))),
        ];
        for (input, want) in cases {
            for size in 1..=input.len() {
                let got = decode(input, size);
                let got = got.as_ref().map(|(a, b)| (a.as_slice(), b.as_slice()));
                assert_eq!(
                    got,
                    want,
                    "{:?} in chunks of {size}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }
}
