//! Line framing for SMTP commands, sans I/O: the session reads bytes into an [`Input`] and
//! takes complete lines out of it; nothing here touches a socket, so the framing is tested on
//! byte chunks of every shape (a line split anywhere, several lines in one read, a line over
//! the limit however it arrives).

/// A line longer than the limit given to [`Input::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Bytes read from the client and not handled yet.
#[derive(Default)]
pub(crate) struct Input {
    buf: Vec<u8>,
    /// Start of the unhandled bytes in `buf`.
    pos: usize,
    /// Inside an over-long line already answered: drop up to its LF.
    skipping: bool,
}

impl Input {
    /// The bytes read and not handled yet.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks the first `n` pending bytes handled.
    pub(crate) fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Drops everything unhandled; returns how much that was.
    pub(crate) fn discard(&mut self) -> usize {
        let n = self.pending().len();
        self.consume(n);
        self.skipping = false;
        n
    }

    /// Makes room for `additional` bytes, first dropping what was handled.
    pub(crate) fn reserve(&mut self, additional: usize) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(additional);
    }

    /// The next complete line (LF included), `Err` once for a line over `max` bytes, or
    /// `None` when more input is needed.
    pub(crate) fn next_line(
        &mut self,
        max: usize,
    ) -> Option<std::result::Result<Vec<u8>, LineTooLong>> {
        loop {
            let pending = self.pending();
            match memchr::memchr(b'\n', pending) {
                Some(at) => {
                    let line = pending[..=at].to_vec();
                    self.consume(at + 1);
                    if std::mem::take(&mut self.skipping) {
                        continue;
                    }
                    return Some(if line.len() > max {
                        Err(LineTooLong)
                    } else {
                        Ok(line)
                    });
                }
                None if self.skipping || pending.len() >= max => {
                    // Too long already: answer once, then drop the rest of it as it comes.
                    let n = pending.len();
                    let answered = std::mem::replace(&mut self.skipping, true);
                    self.consume(n);
                    return (!answered).then_some(Err(LineTooLong));
                }
                None => return None,
            }
        }
    }

    /// Where the next read appends (after [`Input::reserve`]).
    pub(crate) fn read_target(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A framed line, or `Err(())` for one over the limit.
    type Framed = std::result::Result<String, ()>;

    fn lines(chunks: &[&[u8]], max: usize) -> Vec<Framed> {
        let mut input = Input::default();
        let mut out = Vec::new();
        for chunk in chunks {
            input.read_target().extend_from_slice(chunk);
            while let Some(line) = input.next_line(max) {
                out.push(line.map(|l| String::from_utf8(l).unwrap()).map_err(|_| ()));
            }
        }
        out
    }

    #[test]
    fn command_lines_are_framed_and_limited() {
        let ok = |s: &str| Ok(s.to_string());
        let cases: Vec<(Vec<&[u8]>, Vec<Framed>)> = vec![
            (
                vec![b"NOOP\r\nQUIT\r\n"],
                vec![ok("NOOP\r\n"), ok("QUIT\r\n")],
            ),
            (vec![b"NO", b"OP\r", b"\nQ"], vec![ok("NOOP\r\n")]),
            // 10 bytes with CRLF fit a limit of 10; 11 do not, and the line is answered once
            // however it arrives, and the next line is read normally.
            (vec![b"12345678\r\n"], vec![ok("12345678\r\n")]),
            (
                vec![b"123456789\r\nNOOP\r\n"],
                vec![Err(()), ok("NOOP\r\n")],
            ),
            (
                vec![b"1234567", b"89", b"0123", b"45\r\nNOOP\r\n"],
                vec![Err(()), ok("NOOP\r\n")],
            ),
        ];
        for (chunks, want) in cases {
            assert_eq!(lines(&chunks, 10), want, "{chunks:?}");
        }
    }
}
