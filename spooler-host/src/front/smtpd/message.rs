//! The message of a DATA command: read up to the lone dot (dots unstuffed, every line ended
//! with CRLF, the size limit held while reading), then given a `Received:` trace field and,
//! if it has none, a `Message-ID:` and a `Date:`, as Postfix's cleanup does.

use provider_abi::headers::{field_spans, header_block_len};
use provider_abi::Timestamp;

use crate::base::mail::{message_id, rfc5322_date};

/// The longest text line taken (RFC 5321 allows 1000 octets; real mail sometimes has longer
/// lines, so the bound is lenient, but there is one).
pub const MAX_TEXT_LINE: usize = 64 * 1024;

/// What a DATA command brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Data {
    /// The message, CRLF line endings, dots unstuffed.
    Message(Vec<u8>),
    /// It was longer than the limit: read to its end and dropped.
    TooBig,
    /// A line was longer than [`MAX_TEXT_LINE`]: read to its end and dropped.
    LineTooLong,
}

/// A DATA command's message, read as its bytes arrive, up to the line holding only a dot.
/// Only `.` followed by CRLF ends it (a bare LF before or after the dot does not, so no
/// command can be smuggled in after a message). It takes whole lines only (or a piece of a
/// line longer than [`MAX_TEXT_LINE`]), so the session keeps a line's start until its end
/// arrives, and it holds at most the size limit: past it, it reads on keeping nothing.
#[derive(Debug)]
pub struct DataReader {
    content: Vec<u8>,
    max_size: usize,
    /// Whether the bytes taken next continue a line (rather than start one).
    mid_line: bool,
    /// How long the current line is so far.
    line_length: usize,
    too_big: bool,
    too_long: bool,
}

impl DataReader {
    /// A reader for a message of at most `max_size` bytes.
    pub fn new(max_size: usize) -> DataReader {
        DataReader {
            content: Vec::with_capacity(8192),
            max_size,
            mid_line: false,
            line_length: 0,
            too_big: false,
            too_long: false,
        }
    }

    /// Takes what it can of `input`; returns how many bytes it took, and what the DATA
    /// command brought once its end was among them (the bytes after it are not taken).
    pub fn take(&mut self, input: &[u8]) -> (usize, Option<Data>) {
        let mut taken = 0;
        loop {
            let rest = &input[taken..];
            let (piece, complete) = match memchr::memchr(b'\n', rest) {
                Some(end) if end < MAX_TEXT_LINE => (&rest[..=end], true),
                _ if rest.len() >= MAX_TEXT_LINE => (&rest[..MAX_TEXT_LINE], false),
                _ => return (taken, None),
            };
            taken += piece.len();
            let line_start = !self.mid_line;
            if line_start && piece == b".\r\n" {
                return (taken, Some(self.finish()));
            }
            let unstuffed = match piece {
                [b'.', rest @ ..] if line_start => rest,
                _ => piece,
            };
            self.content.extend_from_slice(unstuffed);
            self.line_length += piece.len();
            if complete {
                if !self.content.ends_with(b"\r\n") {
                    let end = self.content.len() - 1;
                    self.content.insert(end, b'\r');
                }
                self.too_long |= self.line_length > MAX_TEXT_LINE;
                self.line_length = 0;
            }
            self.mid_line = !complete;
            self.too_big |= self.content.len() > self.max_size;
            if self.too_big || self.too_long {
                self.content.clear();
            }
        }
    }

    fn finish(&mut self) -> Data {
        if self.too_big {
            Data::TooBig
        } else if self.too_long {
            Data::LineTooLong
        } else {
            Data::Message(std::mem::take(&mut self.content))
        }
    }
}

/// The message with `received` (a whole `Received:` field, CRLF-ended) in front, and a
/// Message-ID (`<unique@hostname>`) and a Date added if its header has none.
pub fn with_trace(content: Vec<u8>, received: &str, hostname: &str, now: Timestamp) -> Vec<u8> {
    let has = |name: &str| !field_spans(&content, name).is_empty();
    let mut out = Vec::with_capacity(content.len() + received.len() + 200);
    out.extend_from_slice(received.as_bytes());
    if !has("Message-ID") {
        out.extend_from_slice(format!("Message-ID: {}\r\n", message_id(hostname)).as_bytes());
    }
    if !has("Date") {
        out.extend_from_slice(format!("Date: {}\r\n", rfc5322_date(now)).as_bytes());
    }
    if header_block_len(&content) == 0 && !content.starts_with(b"\r\n") {
        // No header at all: the added fields end the header, the content is the body.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a DATA command brings from `input`, fed in pieces of `piece` bytes as a
    /// session would (keeping what the reader did not take); an error if it never ends.
    fn data_in_pieces(input: &[u8], max: usize, piece: usize) -> Result<Data, &'static str> {
        let mut reader = DataReader::new(max);
        let mut kept = Vec::new();
        for chunk in input.chunks(piece) {
            kept.extend_from_slice(chunk);
            let (taken, data) = reader.take(&kept);
            kept.drain(..taken);
            if let Some(data) = data {
                return Ok(data);
            }
        }
        Err("the input ended before the message")
    }

    fn data(input: &[u8], max: usize) -> Result<Data, &'static str> {
        let whole = data_in_pieces(input, max, input.len().max(1));
        // Byte by byte, a long line is read again at every byte: only short inputs.
        let pieces: &[usize] = if input.len() < 10_000 {
            &[1, 2, 3, 7]
        } else {
            &[4096]
        };
        for &piece in pieces {
            assert_eq!(
                data_in_pieces(input, max, piece),
                whole,
                "in pieces of {piece}"
            );
        }
        whole
    }

    #[test]
    fn dots_are_unstuffed_and_lines_end_with_crlf() {
        let got = data(
            b"Subject: x\r\n\r\n..hidden\nbare lf\r\n.\r\nQUIT\r\n",
            1000,
        )
        .unwrap();
        assert_eq!(
            got,
            Data::Message(b"Subject: x\r\n\r\n.hidden\r\nbare lf\r\n".to_vec())
        );
    }

    #[test]
    fn only_a_dot_with_crlf_ends_the_message() {
        let got = data(b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", 1000).unwrap();
        assert_eq!(got, Data::Message(b"a\r\n\r\nMAIL FROM:<x@y>\r\n".to_vec()));
    }

    #[test]
    fn an_early_end_is_an_error_and_limits_drop_the_message() {
        assert!(data(b"Subject: x\r\n\r\nhalf", 1000).is_err());
        assert_eq!(data(b"0123456789\r\n.\r\n", 5).unwrap(), Data::TooBig);
        let long = format!("{}\r\n.\r\n", "x".repeat(MAX_TEXT_LINE + 10));
        assert_eq!(
            data(long.as_bytes(), usize::MAX).unwrap(),
            Data::LineTooLong
        );
        let fine = format!("{}\r\n.\r\n", "x".repeat(MAX_TEXT_LINE - 10));
        assert!(matches!(
            data(fine.as_bytes(), usize::MAX).unwrap(),
            Data::Message(_)
        ));
    }

    #[test]
    fn trace_fields_are_added_and_existing_ones_kept() {
        let received = "Received: from c by h; now\r\n";
        let kept = with_trace(
            b"Message-ID: <a@b>\r\nDate: x\r\n\r\nbody\r\n".to_vec(),
            received,
            "h",
            Timestamp(0),
        );
        assert_eq!(
            kept,
            b"Received: from c by h; now\r\nMessage-ID: <a@b>\r\nDate: x\r\n\r\nbody\r\n"
        );
        let added = String::from_utf8(with_trace(
            b"Subject: s\r\n\r\nbody\r\n".to_vec(),
            received,
            "h",
            Timestamp(0),
        ))
        .unwrap();
        assert!(
            added.starts_with("Received: from c by h; now\r\nMessage-ID: <"),
            "{added}"
        );
        assert!(
            added.contains(
                "@h>\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\nSubject: s\r\n\r\nbody\r\n"
            ),
            "{added}"
        );
        let headless = String::from_utf8(with_trace(
            b"just a body\r\n".to_vec(),
            received,
            "h",
            Timestamp(0),
        ))
        .unwrap();
        assert!(
            headless.ends_with("+0000\r\n\r\njust a body\r\n"),
            "{headless}"
        );
    }
}
