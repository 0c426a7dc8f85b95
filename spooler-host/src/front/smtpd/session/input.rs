//! A session's input: the bytes read from the client that the session has not taken yet,
//! in one buffer that is read into in place and reused (it grows only for a line of a
//! message longer than it, up to about twice `MAX_TEXT_LINE`).

use std::io::{self, Read};

/// How much is read at once, at least.
const READ_SIZE: usize = 16 * 1024;

/// The bytes read and not taken.
pub struct Input {
    buffer: Vec<u8>,
    /// Where the bytes not taken start.
    start: usize,
    /// Where the bytes read end.
    end: usize,
}

/// What [`Input::line`] found.
pub enum Line {
    /// A whole line, without its line ending.
    Complete(String),
    /// A line longer than the limit, taken and dropped.
    TooLong,
    /// No line ending yet: read more.
    Unfinished,
    /// No line ending within the limit: what there is was dropped, and the rest of the line
    /// is to be skipped ([`Input::skip_line`]).
    Dropped,
}

impl Input {
    /// An empty input.
    pub fn new() -> Input {
        Input {
            buffer: vec![0; READ_SIZE],
            start: 0,
            end: 0,
        }
    }

    /// The bytes not taken.
    pub fn unread(&self) -> &[u8] {
        &self.buffer[self.start..self.end]
    }

    /// Takes the first `count` bytes not taken.
    pub fn consume(&mut self, count: usize) {
        self.start += count;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    /// Drops everything not taken.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once from `reader` (what one `read` gives); `Ok(0)` at the end of the input.
    pub fn read_from(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        self.read_some(reader).map(|(read, _)| read)
    }

    /// Reads once from `reader`: how many bytes, and whether they filled the room offered
    /// (if not, a socket had no more for now).
    pub fn read_some(&mut self, reader: &mut impl Read) -> io::Result<(usize, bool)> {
        if self.buffer.len() - self.end < READ_SIZE / 4 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buffer.len() - self.end < READ_SIZE / 4 {
                self.buffer.resize(self.buffer.len() + READ_SIZE, 0);
            }
        }
        let room = self.buffer.len() - self.end;
        let read = reader.read(&mut self.buffer[self.end..])?;
        self.end += read;
        Ok((read, read == room))
    }

    /// The next line of at most `max` octets (plus its line ending), taken.
    pub fn line(&mut self, max: usize) -> Line {
        let unread = self.unread();
        match memchr::memchr(b'\n', unread) {
            Some(end) if end + 1 > max + 2 => {
                self.consume(end + 1);
                Line::TooLong
            }
            Some(end) => {
                let text = String::from_utf8_lossy(&unread[..end])
                    .trim_end_matches('\r')
                    .to_owned();
                self.consume(end + 1);
                Line::Complete(text)
            }
            None if unread.len() >= max + 2 => {
                self.clear();
                Line::Dropped
            }
            None => Line::Unfinished,
        }
    }

    /// Takes the input up to the end of the current line; false if the line has not ended
    /// yet (everything is taken then).
    pub fn skip_line(&mut self) -> bool {
        match memchr::memchr(b'\n', self.unread()) {
            Some(end) => {
                self.consume(end + 1);
                true
            }
            None => {
                self.clear();
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(bytes: &[u8]) -> Input {
        let mut input = Input::new();
        input.read_from(&mut &bytes[..]).unwrap();
        input
    }

    #[test]
    fn lines_are_taken_one_at_a_time() {
        let mut lines = input(b"EHLO a\r\nMAIL FROM:<x@y>\nRCPT");
        assert!(matches!(lines.line(100), Line::Complete(l) if l == "EHLO a"));
        assert!(matches!(lines.line(100), Line::Complete(l) if l == "MAIL FROM:<x@y>"));
        assert!(matches!(lines.line(100), Line::Unfinished));
        assert_eq!(lines.unread(), b"RCPT");
    }

    #[test]
    fn long_lines_are_dropped() {
        let mut lines = input(b"0123456789\r\nok\r\n");
        assert!(matches!(lines.line(5), Line::TooLong));
        assert!(matches!(lines.line(5), Line::Complete(l) if l == "ok"));
        let mut unended = input(b"0123456789");
        assert!(matches!(unended.line(5), Line::Dropped));
        assert!(unended.unread().is_empty());
    }

    #[test]
    fn the_buffer_makes_room_by_moving_what_is_left() {
        let mut lines = Input::new();
        let big = vec![b'x'; READ_SIZE - 10];
        lines.read_from(&mut &big[..]).unwrap();
        lines.consume(READ_SIZE - 12);
        lines.read_from(&mut &b"y\r\n"[..]).unwrap();
        assert_eq!(lines.unread(), b"xxy\r\n");
        assert_eq!(lines.buffer.len(), READ_SIZE);
    }
}
