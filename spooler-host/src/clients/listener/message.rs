//! The message of a DATA command: read up to the lone dot (dots unstuffed, every line ended
//! with CRLF, the size limit held while reading), then given a `Received:` trace field and,
//! if it has none, a `Message-ID:` and a `Date:`, as Postfix's cleanup does.

use std::io::{self, BufRead, Read};

use provider_abi::headers::{field_spans, header_block_len};
use provider_abi::Timestamp;

use crate::clients::sendmail::message::unique_part;
use crate::queue::reports::rfc5322_date;

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

/// Reads the message up to the line holding only a dot. Only `.` followed by CRLF ends it
/// (a bare LF before or after the dot does not, so no command can be smuggled in after a
/// message). The connection ending first is an error: nothing of it is kept.
pub fn read(reader: &mut impl BufRead, max_size: usize) -> io::Result<Data> {
    let mut content = Vec::with_capacity(8192);
    let mut too_big = false;
    let mut too_long = false;
    // Whether the bytes read next start a line, and how long the current line is so far.
    let mut line_start = true;
    let mut line_length = 0usize;
    loop {
        let start = content.len();
        let read = reader
            .by_ref()
            .take(MAX_TEXT_LINE as u64)
            .read_until(b'\n', &mut content)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before the end of the message",
            ));
        }
        let complete = content.ends_with(b"\n");
        if line_start && complete && &content[start..] == b".\r\n" {
            content.truncate(start);
            break;
        }
        if line_start && content[start] == b'.' {
            content.remove(start);
        }
        line_length += read;
        if complete {
            if !content.ends_with(b"\r\n") {
                let end = content.len() - 1;
                content.insert(end, b'\r');
            }
            too_long |= line_length > MAX_TEXT_LINE;
            line_length = 0;
        }
        line_start = complete;
        if content.len() > max_size {
            too_big = true;
        }
        if too_big || too_long {
            // Keep reading to the end, keeping nothing.
            content.clear();
        }
    }
    Ok(if too_big {
        Data::TooBig
    } else if too_long {
        Data::LineTooLong
    } else {
        Data::Message(content)
    })
}

/// The message with `received` (a whole `Received:` field, CRLF-ended) in front, and a
/// Message-ID (`<unique@hostname>`) and a Date added if its header has none.
pub fn with_trace(content: Vec<u8>, received: &str, hostname: &str, now: Timestamp) -> Vec<u8> {
    let has = |name: &str| !field_spans(&content, name).is_empty();
    let mut out = Vec::with_capacity(content.len() + received.len() + 200);
    out.extend_from_slice(received.as_bytes());
    if !has("Message-ID") {
        out.extend_from_slice(format!("Message-ID: <{}@{hostname}>\r\n", unique_part()).as_bytes());
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

    fn data(input: &[u8], max: usize) -> io::Result<Data> {
        read(&mut io::BufReader::new(input), max)
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
