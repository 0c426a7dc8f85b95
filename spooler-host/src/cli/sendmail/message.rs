//! The message as sendmail takes it from standard input: a lone `.` line ends it unless
//! dots are data (`-i`), and it gets the header fields a submission needs where it has none
//! (a Message-ID; a From with `-F`'s full name).

use provider_abi::headers::{header, header_block_len};

use crate::base::mail::message_id;

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

/// The message with a Message-ID header field added at the top if it has none: the
/// Message-ID is what makes a retried submission recognisable (with the sender and the
/// recipients). The field ends its line as the message's first line does; a message that
/// starts with no header field at all gets the field and the empty line that ends headers.
pub fn with_message_id(content: Vec<u8>, host: &str) -> Vec<u8> {
    if header(&content, "Message-ID").is_some() {
        return content;
    }
    with_fields_on_top(content, &[format!("Message-ID: {}", message_id(host))])
}

/// The message with a From field naming the sender with `-F`'s full name, added at the top
/// when `-F` is given and the message has no From (as sendmail does); otherwise unchanged.
pub fn with_full_name(content: Vec<u8>, from: &str, full_name: Option<&str>) -> Vec<u8> {
    let Some(name) = full_name.map(str::trim).filter(|name| !name.is_empty()) else {
        return content;
    };
    if header(&content, "From").is_some() {
        return content;
    }
    with_fields_on_top(content, &[format!("From: {} <{from}>", display_name(name))])
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

    #[test]
    fn a_message_id_is_added_only_where_there_is_none() {
        let with = b"Message-ID: <a@b>\nSubject: x\n\nbody\n".to_vec();
        assert_eq!(with_message_id(with.clone(), "h"), with);
        let lf = String::from_utf8(with_message_id(b"Subject: x\n\nbody\n".to_vec(), "h")).unwrap();
        assert!(
            lf.starts_with("Message-ID: <") && lf.ends_with("@h>\nSubject: x\n\nbody\n"),
            "{lf}"
        );
        let crlf = String::from_utf8(with_message_id(b"Subject: x\r\n\r\nbody\r\n".to_vec(), "h"))
            .unwrap();
        assert!(
            crlf.ends_with("@h>\r\nSubject: x\r\n\r\nbody\r\n"),
            "{crlf}"
        );
        let body_only = String::from_utf8(with_message_id(b"just text\n".to_vec(), "h")).unwrap();
        assert!(body_only.ends_with("@h>\n\njust text\n"), "{body_only}");
        assert_ne!(message_id("h"), message_id("h"));
    }

    #[test]
    fn a_from_with_the_full_name_is_added_only_where_there_is_none() {
        let added = String::from_utf8(with_full_name(
            b"Subject: x\n\nbody\n".to_vec(),
            "root@host",
            Some("Cron Daemon"),
        ))
        .unwrap();
        assert_eq!(added, "From: Cron Daemon <root@host>\nSubject: x\n\nbody\n");
        let kept = b"From: a@b\r\n\r\n".to_vec();
        assert_eq!(with_full_name(kept.clone(), "root@host", Some("X")), kept);
        let plain = b"Subject: x\n\n".to_vec();
        assert_eq!(with_full_name(plain.clone(), "root@host", None), plain);
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
