//! Reading RFC 5322 messages, for the host and for providers that route or file by header
//! (rules, subjects in folder listings, envelopes of pickup files): header fields unfolded
//! with RFC 2047 encoded words decoded, and address lists as RFC 5322 reads them (display
//! names, comments, groups, obsolete syntax).
//!
//! The parsing is `mail-parser`'s (fuzzed, and used by a production mail server); this
//! module only chooses how each field is read and hands out owned values.

use std::ops::Range;

use mail_parser::{Address as ParsedAddress, HeaderName, HeaderValue, MessageParser};

/// The header fields of `content` in order: names as written (fields RFC 5322 and MIME
/// define in their usual spelling, `Cc` for `CC`), values unfolded, encoded words (RFC 2047)
/// decoded to UTF-8, and trimmed. Reading stops where the header block
/// ends (at the first empty line, or at a line that is not a header field).
pub fn header_fields(content: &[u8]) -> Vec<(String, String)> {
    // mail-parser reads the fields it knows (From, To, Date, Message-ID, Received…) with
    // their own parsers whatever the default says, and those values have no text: every name
    // the message has is set to be read as text.
    let Some(names) = skipping_values().parse_headers(content).map(|message| {
        message
            .headers()
            .iter()
            .map(|field| field.name.to_owned())
            .collect::<Vec<_>>()
    }) else {
        return Vec::new();
    };
    let parser = names.into_iter().fold(
        MessageParser::new().default_header_text(),
        |parser, name| parser.header_text(name),
    );
    let Some(message) = parser.parse_headers(content) else {
        return Vec::new();
    };
    message
        .headers()
        .iter()
        .map(|field| (one_line(field.name()), text_of(field.value())))
        .collect()
}

/// A field's value read as text, on one line.
fn text_of(value: &HeaderValue<'_>) -> String {
    match value {
        HeaderValue::Text(text) => one_line(text),
        HeaderValue::TextList(texts) => one_line(&texts.join(", ")),
        _ => String::new(),
    }
}

/// `text` on one line and trimmed: a line break (which a decoded encoded word may hold)
/// becomes a space.
fn one_line(text: &str) -> String {
    text.trim().replace(['\r', '\n'], " ")
}

/// A parser that reads no field's value, only where each field lies. Giving one field name
/// (here one no field has) a parser of its own makes mail-parser use the default, ignore, for
/// every other field; with none, it reads every field it knows with its own parser (Received,
/// Date, addresses), the costliest part of reading a header block.
fn skipping_values() -> MessageParser {
    MessageParser::new()
        .default_header_ignore()
        .header_raw(HeaderName::Other("".into()))
}

/// The first value of header `name` (case-insensitive), unfolded and decoded.
pub fn header(content: &[u8], name: &str) -> Option<String> {
    // One pass that reads only the wanted field, as text (as `header_fields` reads it).
    let message = MessageParser::new()
        .default_header_ignore()
        .header_text(HeaderName::from(name.to_owned()))
        .parse_headers(content)?;
    let field = message
        .headers()
        .iter()
        .find(|field| one_line(field.name()).eq_ignore_ascii_case(name))?;
    match field.value() {
        // Empty, or a name mail-parser reads otherwise than as written (with a control
        // character, say): ask the slow way, which reads every field as text.
        HeaderValue::Empty => header_fields(content)
            .into_iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value),
        value => Some(text_of(value)),
    }
}

/// A mailbox named in an address field: its display name (decoded, comments included) and
/// its address (`local-part@domain`, as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, if the field gives one.
    pub name: Option<String>,
    /// The address, e.g. `bob@example.com`.
    pub address: String,
}

/// The mailboxes of every field called `name` (case-insensitive), in order: the members of
/// a group are listed as mailboxes of their own, an empty group (`undisclosed-recipients:;`)
/// gives none, and an entry without an address is left out.
pub fn mailboxes(content: &[u8], name: &str) -> Vec<Mailbox> {
    let wanted = HeaderName::from(name.to_owned());
    let parser = MessageParser::new()
        .header_address(wanted.clone())
        .default_header_ignore();
    let Some(message) = parser.parse_headers(content) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for field in message.headers() {
        if field.name != wanted {
            continue;
        }
        let addrs: Vec<_> = match field.value() {
            HeaderValue::Address(ParsedAddress::List(list)) => list.iter().collect(),
            HeaderValue::Address(ParsedAddress::Group(groups)) => {
                groups.iter().flat_map(|g| g.addresses.iter()).collect()
            }
            _ => Vec::new(),
        };
        found.extend(addrs.into_iter().filter_map(|addr| {
            // A bare word (`To: root`) is no RFC 5322 mailbox, but sendmail takes it as a
            // local name; the parser hands it on as a name without an address.
            let bare_word = || {
                addr.name()
                    .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
            };
            let address = addr_spec(addr.address().or_else(bare_word)?);
            (!address.is_empty()).then(|| Mailbox {
                name: addr.name().map(str::to_owned),
                address,
            })
        }));
    }
    found
}

/// An address as RFC 5322 means it where the parser hands it on as written in obsolete
/// syntax (section 4.4): without a source route (`@relay.example:`, which RFC 5321 says to
/// ignore) and without the white space allowed around the dots (`jdoe@test . example`);
/// white space inside a quoted local part stays.
fn addr_spec(raw: &str) -> String {
    let raw = raw.trim();
    let without_route = match raw.strip_prefix('@').and_then(|_| raw.split_once(':')) {
        Some((_, rest)) => rest,
        None => raw,
    };
    let mut address = String::with_capacity(without_route.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in without_route.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => continue,
            _ => {}
        }
        address.push(c);
    }
    address
}

/// Where the fields called `name` (case-insensitive) lie in `content`, in order: from the
/// end of the field before (the start of its name, but for stray bytes the parser skipped)
/// to the end of the field's last line, its line ending included.
pub fn field_spans(content: &[u8], name: &str) -> Vec<Range<usize>> {
    let wanted = HeaderName::from(name.to_owned());
    let Some(message) = skipping_values().parse_headers(content) else {
        return Vec::new();
    };
    // A field owns whatever lies between the end of the field before it and its name (a
    // stray carriage return, say), so that removing a field leaves nothing of it behind.
    let mut previous_end = 0;
    let mut spans = Vec::new();
    for field in message.headers() {
        let end = field.offset_end() as usize;
        if field.name == wanted {
            spans.push(previous_end..end);
        }
        previous_end = end;
    }
    spans
}

/// How long the header block of `content` is: up to the end of its last field's last line
/// (its line ending included), without the empty line that ends the block.
pub fn header_block_len(content: &[u8]) -> usize {
    skipping_values()
        .parse_headers(content)
        .and_then(|message| {
            message
                .headers()
                .last()
                .map(|last| last.offset_end() as usize)
        })
        .map_or(0, |end| end.min(content.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_mail_parser_knows_are_read_as_text_too() {
        let message = b"From: Boss <boss@example.com>\r\nMessage-ID: <a@b>\r\nTo: x@y, z@w\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\nReceived: from a by b; Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nNow.\r\n";
        assert_eq!(
            header_fields(message),
            [
                ("From".to_owned(), "Boss <boss@example.com>".to_owned()),
                ("Message-ID".to_owned(), "<a@b>".to_owned()),
                ("To".to_owned(), "x@y, z@w".to_owned()),
                (
                    "Date".to_owned(),
                    "Mon, 23 Nov 2026 09:00:00 +0000".to_owned()
                ),
                (
                    "Received".to_owned(),
                    "from a by b; Mon, 23 Nov 2026 09:00:00 +0000".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn reads_folded_headers_and_stops_at_the_body() {
        let message = b"Subject: hello\r\n  world\r\nX-Spam: yes\r\n\r\nSubject: not a header\r\n";
        assert_eq!(header(message, "subject").as_deref(), Some("hello world"));
        assert_eq!(header(message, "X-SPAM").as_deref(), Some("yes"));
        assert_eq!(header_fields(message).len(), 2);
        assert_eq!(header_block_len(message), 38);
    }

    #[test]
    fn encoded_words_are_decoded() {
        let message = b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\n =?iso-8859-1?q?K=F6ln?=\n\nbody";
        assert_eq!(
            header(message, "Subject").as_deref(),
            Some("Grüße aus Köln")
        );
    }

    #[test]
    fn address_lists_with_groups_comments_and_encoded_names() {
        let message = b"To: \"Doe, John\" <john@example.net>, =?utf-8?q?J=C3=BCrgen?= <j@example.net> (work),\r\n\
            \tfriends: ann@example.net, bob@example.net;\r\n\
            Cc: undisclosed-recipients:;\r\n\
            Bcc: secret@example.net\r\n\r\nbody\r\n";
        let to: Vec<String> = mailboxes(message, "to")
            .into_iter()
            .map(|m| m.address)
            .collect();
        assert_eq!(
            to,
            [
                "john@example.net",
                "j@example.net",
                "ann@example.net",
                "bob@example.net"
            ]
        );
        let names: Vec<Option<String>> = mailboxes(message, "To")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names[0].as_deref(), Some("Doe, John"));
        assert!(names[1].as_deref().unwrap().starts_with("Jürgen"));
        assert!(mailboxes(message, "Cc").is_empty());
        assert_eq!(mailboxes(message, "BCC")[0].address, "secret@example.net");
    }

    #[test]
    fn obsolete_routes_and_spaces_are_read_as_rfc5322_means_them() {
        let message = b"To: Mary <@node.test,@relay.test:mary@example.net>, jdoe@test  . example,\n <\"john  doe\"@example.org>\n\n";
        let to: Vec<String> = mailboxes(message, "To")
            .into_iter()
            .map(|m| m.address)
            .collect();
        assert_eq!(
            to,
            [
                "mary@example.net",
                "jdoe@test.example",
                "\"john  doe\"@example.org"
            ]
        );
    }

    #[test]
    fn field_spans_cover_folded_lines() {
        let message = b"From: a@x\r\nBcc: s@x,\r\n  o@x\r\nTo: b@x\r\n\r\nBcc: body\r\n";
        let spans = field_spans(message, "bcc");
        assert_eq!(spans.len(), 1);
        assert_eq!(&message[spans[0].clone()], b"Bcc: s@x,\r\n  o@x\r\n");
    }
}
