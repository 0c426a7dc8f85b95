//! The message as sendmail takes it from standard input: a lone `.` line ends it unless
//! dots are data (`-i`), and it gets the header fields a submission needs where it has none
//! (Message-ID, Date, From).

use provider_abi::headers::{header, header_block_len};

use crate::base::mail::{message_id, rfc5322_date};
use provider_abi::Timestamp;

/// The message as read from standard input: without `-i`, a line holding a lone `.` ends it.
pub fn message_from_input(input: Vec<u8>, ignore_dots: bool) -> Vec<u8> {
    if ignore_dots {
        return input;
    }
    let mut end = 0;
    for line in input.split_inclusive(|&b| b == b'\n') {
        if line == b".\n" || line == b".\r\n" || line == b"." {
            return input[..end].to_vec();
        }
        end += line.len();
    }
    input
}

/// Who and when a message comes from, for the header fields sendmail adds where the message
/// has none.
pub struct Origin<'a> {
    /// This machine's name, the right side of a new Message-ID.
    pub host: &'a str,
    /// The sender's address (see [`from_address`]).
    pub from: &'a str,
    /// `-F`'s full name, the From field's display name.
    pub full_name: Option<&'a str>,
    /// The submission's time, the Date field.
    pub now: Timestamp,
}

/// The message with the header fields a submission needs added at the top where it has none,
/// as sendmail does: a Message-ID (it is what makes a retried submission recognisable, with
/// the sender and the recipients), a Date (now), and a From (the sender, with `-F`'s full
/// name). A message without From or Date is not RFC 5322 and many receivers refuse it; the
/// SMTP listener adds its own the same way. The fields end their lines as the message's first
/// line does; a message that starts with no header field at all gets the fields and the empty
/// line that ends headers.
pub fn with_missing_fields(content: Vec<u8>, origin: &Origin) -> Vec<u8> {
    let mut fields = Vec::new();
    if header(&content, "Message-ID").is_none() {
        fields.push(format!("Message-ID: {}", message_id(origin.host)));
    }
    if header(&content, "Date").is_none() {
        fields.push(format!("Date: {}", rfc5322_date(origin.now)));
    }
    if header(&content, "From").is_none() {
        let name = origin
            .full_name
            .map(str::trim)
            .filter(|name| !name.is_empty());
        fields.push(match name {
            Some(name) => format!("From: {} <{}>", display_name(name), origin.from),
            None => format!("From: {}", origin.from),
        });
    }
    if fields.is_empty() {
        return content;
    }
    with_fields_on_top(content, &fields)
}

/// The address a From field gives for the envelope sender: SMTP addresses as they are, a
/// local name (`LOCAL:root`, `root`) at `domain`.
pub fn from_address(sender: &str, domain: &str) -> String {
    match sender.split_once(':') {
        Some((kind, address)) if kind.eq_ignore_ascii_case("SMTP") => address.to_owned(),
        Some((_, name)) => format!("{name}@{domain}"),
        None if sender.contains('@') => sender.to_owned(),
        None => format!("{sender}@{domain}"),
    }
}

/// A display name as RFC 5322 allows it: as it is when it is plain words, quoted when it
/// has specials, an encoded word (RFC 2047) when it is not ASCII.
fn display_name(name: &str) -> String {
    if !name.is_ascii() {
        let encoded: String = name
            .bytes()
            .map(|byte| match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (byte as char).to_string(),
                b' ' => "_".to_owned(),
                _ => format!("={byte:02X}"),
            })
            .collect();
        return format!("=?utf-8?q?{encoded}?=");
    }
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') {
        return name.to_owned();
    }
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `fields` put at the top of `content`. They end their lines as the message's first line
/// does; a message that starts with no header field at all gets the empty line that ends
/// headers after them.
fn with_fields_on_top(content: Vec<u8>, fields: &[String]) -> Vec<u8> {
    let first_line = content
        .split_inclusive(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let newline: &[u8] = if first_line.ends_with(b"\r\n") || !first_line.ends_with(b"\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let starts_with_headers = header_block_len(first_line) > 0;
    let mut out = Vec::with_capacity(content.len() + 200);
    for field in fields {
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(newline);
    }
    if !starts_with_headers {
        out.extend_from_slice(newline);
    }
    out.extend_from_slice(&content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(0);

    fn origin<'a>(from: &'a str, full_name: Option<&'a str>) -> Origin<'a> {
        Origin {
            host: "h",
            from,
            full_name,
            now: NOW,
        }
    }

    #[test]
    fn only_the_missing_fields_are_added_and_lines_end_as_the_message_s_do() {
        let complete = b"Message-ID: <a@b>\nDate: x\nFrom: a@b\nSubject: x\n\nbody\n".to_vec();
        assert_eq!(
            with_missing_fields(complete.clone(), &origin("root@h", Some("X"))),
            complete
        );
        let lf = String::from_utf8(with_missing_fields(
            b"Date: x\nFrom: a@b\nSubject: x\n\nbody\n".to_vec(),
            &origin("root@h", None),
        ))
        .unwrap();
        assert!(
            lf.starts_with("Message-ID: <")
                && lf.ends_with("@h>\nDate: x\nFrom: a@b\nSubject: x\n\nbody\n"),
            "{lf}"
        );
        let crlf = String::from_utf8(with_missing_fields(
            b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody\r\n".to_vec(),
            &origin("root@h", None),
        ))
        .unwrap();
        assert_eq!(
            crlf,
            "Date: Thu, 1 Jan 1970 00:00:00 +0000\r\nFrom: root@h\r\nMessage-ID: <a@b>\r\nSubject: x\r\n\r\nbody\r\n"
        );
        let body_only = String::from_utf8(with_missing_fields(
            b"just text\n".to_vec(),
            &origin("root@h", None),
        ))
        .unwrap();
        assert!(
            body_only.ends_with("\nFrom: root@h\n\njust text\n"),
            "{body_only}"
        );
        assert_ne!(message_id("h"), message_id("h"));
    }

    #[test]
    fn the_from_field_carries_the_full_name() {
        let added = String::from_utf8(with_missing_fields(
            b"Message-ID: <a@b>\nDate: x\nSubject: x\n\nbody\n".to_vec(),
            &origin("root@host", Some("Cron Daemon")),
        ))
        .unwrap();
        assert_eq!(
            added,
            "From: Cron Daemon <root@host>\nMessage-ID: <a@b>\nDate: x\nSubject: x\n\nbody\n"
        );
        assert_eq!(display_name("Doe, John"), "\"Doe, John\"");
        assert_eq!(display_name("Jürgen"), "=?utf-8?q?J=C3=BCrgen?=");
        assert_eq!(from_address("LOCAL:root", "host"), "root@host");
        assert_eq!(from_address("SMTP:a@b", "host"), "a@b");
        assert_eq!(from_address("a@b", "host"), "a@b");
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_dots_are_data() {
        let input = b"Subject: x\r\n\r\nbody\r\n.\r\nafter\r\n".to_vec();
        assert_eq!(
            message_from_input(input.clone(), false),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(message_from_input(input.clone(), true), input);
    }
}
