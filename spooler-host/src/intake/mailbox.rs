//! Address syntax checked at submission, before anything is stored, for recipients named on
//! the command line and read from headers (`-t`) alike: an SMTP address must be an RFC 5321
//! mailbox (with RFC 6531's UTF-8, for transports that speak SMTPUTF8), and no address of any
//! type may hold angle brackets (they would end an SMTP path and let what follows be read as
//! parameters, e.g. `x@example.net> NOTIFY=NEVER`).
//!
//! The grammar is `email_address`'s (RFC 5321/5322 local parts and domains, UTF-8 allowed),
//! the checker the SMTP transport's `lettre` validates with, so what is accepted here is what
//! that transport accepts; this module adds what it leaves open: the length of the whole
//! path and the content of address literals (`[192.0.2.1]`, `[IPv6:…]`).

use email_address::{EmailAddress, Error, Options};
use provider_abi::Address;

/// RFC 5321's limit on a path (with its angle brackets) of 256 octets.
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
    let options = Options::default().without_display_text();
    if let Err(error) = EmailAddress::parse_with_options(mailbox, options) {
        return Some(match error {
            Error::MissingSeparator => "it has no @domain",
            Error::LocalPartEmpty => "the part before the @ is empty",
            Error::LocalPartTooLong => "the part before the @ is longer than 64 octets",
            Error::DomainEmpty => "the domain after the @ is empty",
            Error::DomainTooLong => "the domain is longer than 255 octets",
            Error::UnbalancedQuotes => "the quotes around the part before the @ do not match",
            _ if mailbox
                .rsplit_once('@')
                .is_some_and(|(local, _)| !EmailAddress::is_valid_local_part(local)) =>
            {
                "the part before the @ has a character that needs quoting (space, comma, \
                 parenthesis, @...) or an empty dot-separated part"
            }
            _ => DOMAIN_RULE,
        });
    }
    let (_, domain) = mailbox.rsplit_once('@')?;
    match domain.strip_prefix('[') {
        Some(literal) if !literal.strip_suffix(']').is_some_and(is_address_literal) => {
            Some(DOMAIN_RULE)
        }
        _ => None,
    }
}

const DOMAIN_RULE: &str = "the domain must be dot-separated labels of letters, digits and \
                           hyphens, or an address literal such as [192.0.2.1]";

/// The inside of `[…]`: an IPv4 address, `IPv6:` and an IPv6 address, or a standardized
/// tag (a label) and its printable content (RFC 5321, 4.1.3).
fn is_address_literal(inner: &str) -> bool {
    if let Some(v6) = inner.strip_prefix("IPv6:") {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if inner.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    match inner.split_once(':') {
        Some((tag, content)) => {
            !tag.is_empty()
                && !tag.ends_with('-')
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric())
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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
