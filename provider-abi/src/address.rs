//! Recipient addresses written `TYPE:address`, the key the host routes by.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// A recipient address with its address type, e.g. `SMTP:bob@example.com` or `FAX:+4930123`.
///
/// The type is kept upper-case, so types compare case-insensitively as MAPI's do. A bare
/// `bob@example.com` is an SMTP address.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    address_type: RString,
    address: RString,
}

/// Why a recipient could not be read as an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a recipient address: {} (write TYPE:address, e.g. SMTP:bob@example.com, or a bare bob@example.com)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for AddressError {}

impl Address {
    /// An address of `address_type` (any case; kept upper-case).
    pub fn new(address_type: &str, address: &str) -> Result<Self, AddressError> {
        let error = |reason| AddressError {
            input: format!("{address_type}:{address}"),
            reason,
        };
        if !is_address_type(address_type) {
            return Err(error(
                "the type must be letters, digits, '-' or '_', starting with a letter",
            ));
        }
        if address.trim().is_empty() {
            return Err(error("the address after the type is empty"));
        }
        if address.chars().any(char::is_control) {
            return Err(error("the address contains control characters"));
        }
        Ok(Address {
            address_type: address_type.to_ascii_uppercase().into(),
            address: address.trim().into(),
        })
    }

    /// Reads `TYPE:address`, or a bare address with an `@` as SMTP.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        match input.split_once(':') {
            Some((address_type, address)) if is_address_type(address_type) => {
                Address::new(address_type, address)
            }
            _ if input.contains('@') => Address::new("SMTP", input),
            _ => Err(AddressError {
                input: input.to_owned(),
                reason: "it has no address type and is not an SMTP address",
            }),
        }
    }

    /// The address type, upper-case (`SMTP`, `FAX`, `LOCAL`).
    pub fn address_type(&self) -> &str {
        &self.address_type
    }

    /// The address within its type (`bob@example.com`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether this address has `address_type`, compared case-insensitively.
    pub fn has_type(&self, address_type: &str) -> bool {
        self.address_type.eq_ignore_ascii_case(address_type)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.address_type, self.address)
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Address::parse(input)
    }
}

/// Whether `candidate` can be an address type: a letter, then letters, digits, `-` or `_`.
pub fn is_address_type(candidate: &str) -> bool {
    let mut chars = candidate.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_and_bare_addresses() {
        let fax = Address::parse("fax:+49301234567").unwrap();
        assert_eq!(fax.address_type(), "FAX");
        assert_eq!(fax.address(), "+49301234567");
        assert!(fax.has_type("Fax"));
        let bare = Address::parse("bob@example.com").unwrap();
        assert_eq!(bare.to_string(), "SMTP:bob@example.com");
        let ipv6 = Address::parse("bob@[IPv6:::1]").unwrap();
        assert_eq!(ipv6.address_type(), "SMTP");
    }

    #[test]
    fn bad_addresses_say_why() {
        let error = Address::parse("alice").unwrap_err().to_string();
        assert!(error.contains("no address type"), "{error}");
        let error = Address::parse("LOCAL:").unwrap_err().to_string();
        assert!(error.contains("empty"), "{error}");
    }
}
