//! Address syntax checked at submission, before anything is stored: an SMTP address must be
//! an RFC 5321 mailbox (with RFC 6531's UTF-8, for transports that speak SMTPUTF8), and no
//! address of any type may hold angle brackets (they would end an SMTP path and let what
//! follows be read as parameters, e.g. `x@example.net> NOTIFY=NEVER`).

use provider_abi::Address;

/// RFC 5321's limits: a local part of at most 64 octets, a domain of at most 255, a path
/// (with its angle brackets) of at most 256.
const MAX_LOCAL_PART: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_MAILBOX: usize = 254;

/// Why `address` cannot be submitted, or `None` if its syntax is good.
pub fn syntax_error(address: &Address) -> Option<String> {
    let text = address.address();
    if text.contains(['<', '>']) {
        return Some(format!(
            "`{address}` contains an angle bracket; give the bare address"
        ));
    }
    if address.has_type("SMTP") {
        return smtp_mailbox_error(text)
            .map(|why| format!("`{address}` is not an SMTP mailbox (RFC 5321): {why}"));
    }
    None
}

/// Why `mailbox` is not `local-part@domain` as RFC 5321 (and RFC 6531) write it.
fn smtp_mailbox_error(mailbox: &str) -> Option<&'static str> {
    if mailbox.len() > MAX_MAILBOX {
        return Some("it is longer than 254 octets");
    }
    let Some((local, domain)) = mailbox.rsplit_once('@') else {
        return Some("it has no @domain");
    };
    if local.is_empty() {
        return Some("the part before the @ is empty");
    }
    if local.len() > MAX_LOCAL_PART {
        return Some("the part before the @ is longer than 64 octets");
    }
    let local_ok = if local.starts_with('"') {
        is_quoted_string(local)
    } else {
        local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
    };
    if !local_ok {
        return Some(
            "the part before the @ has a character that needs quoting (space, comma, \
             parenthesis, @...) or an empty dot-separated part",
        );
    }
    if domain.is_empty() {
        return Some("the domain after the @ is empty");
    }
    if domain.len() > MAX_DOMAIN {
        return Some("the domain is longer than 255 octets");
    }
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.strip_suffix(']').is_some_and(is_address_literal)
    } else {
        domain.split('.').all(is_sub_domain)
    };
    if !domain_ok {
        return Some(
            "the domain must be dot-separated labels of letters, digits and hyphens, \
             or an address literal such as [192.0.2.1]",
        );
    }
    None
}

/// RFC 5321 `atext` (RFC 5322's) and RFC 6531's UTF-8 characters.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `"…"` with printable characters inside, `\` quoting one of them.
fn is_quoted_string(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\\' => chars
                .next()
                .is_some_and(|q| q == ' ' || q.is_ascii_graphic()),
            '"' => false,
            c => c == ' ' || c.is_ascii_graphic() || !c.is_ascii(),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// A label: letters, digits (or UTF-8) and inner hyphens, at most 63 octets.
fn is_sub_domain(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
}

/// The inside of `[…]`: an IPv4 address, `IPv6:` and an IPv6 address, or a standardized
/// tag and its printable content.
fn is_address_literal(inner: &str) -> bool {
    if let Some(v6) = inner.strip_prefix("IPv6:") {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    match inner.split_once(':') {
        Some((tag, content)) => {
            is_sub_domain(tag)
                && !content.is_empty()
                && content
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"[]\\".contains(c))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(input: &str) -> Option<String> {
        syntax_error(&Address::parse(input).unwrap())
    }

    #[test]
    fn good_mailboxes_pass() {
        for good in [
            "bob@example.com",
            "first.last+tag@sub.example.co.uk",
            "\"Doe, John\"@example.com",
            "\"a\\\"b\"@example.com",
            "o'brien@example.ie",
            "bob@[192.0.2.1]",
            "bob@[IPv6:2001:db8::1]",
            "jürgen@müller.example",
            "FAX:+49 30 1234567",
            "LOCAL:root",
        ] {
            assert_eq!(error(good), None, "{good}");
        }
    }

    #[test]
    fn bad_addresses_are_named_with_the_reason() {
        let injected = error("SMTP:x@example.net> NOTIFY=NEVER").unwrap();
        assert!(injected.contains("angle bracket"), "{injected}");
        assert!(error("FAX:<123>").unwrap().contains("angle bracket"));
        for bad in [
            "SMTP:bob",
            "@example.com",
            "bob@",
            "bob smith@example.com",
            "bob..smith@example.com",
            ".bob@example.com",
            "bob@exa mple.com",
            "bob@-example.com",
            "bob@example..com",
            "bob@[300.1.1.1]",
            "bob,ann@example.com",
            "\"unterminated@example.com",
        ] {
            let why = error(bad).unwrap_or_else(|| panic!("{bad} passed"));
            assert!(why.contains("is not an SMTP mailbox"), "{why}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(error(&long).unwrap().contains("64 octets"));
    }
}
