//! Reading RFC 5322 header fields from message content, for providers that route or file
//! by header (rules, subjects in folder listings).

/// The header fields of `content` in order, names as written, values unfolded and trimmed.
/// Reading stops at the first empty line (the start of the body).
pub fn header_fields(content: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(content);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
    {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

/// The first value of header `name` (case-insensitive), unfolded.
pub fn header(content: &[u8], name: &str) -> Option<String> {
    header_fields(content)
        .into_iter()
        .find(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_folded_headers_and_stops_at_the_body() {
        let message = b"Subject: hello\r\n  world\r\nX-Spam: yes\r\n\r\nSubject: not a header\r\n";
        assert_eq!(header(message, "subject").as_deref(), Some("hello world"));
        assert_eq!(header(message, "X-SPAM").as_deref(), Some("yes"));
        assert_eq!(header_fields(message).len(), 2);
    }
}
