//! The error every provider call can return: a kind the host acts on and a message a person reads.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What kind of failure a provider reports; the host decides what to do from it.
///
/// Non-exhaustive across the ABI: a host that meets a kind it does not know treats it as
/// [`ErrorKind::Temporary`], so nothing is lost.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 8, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ErrorKind {
    /// Worth trying again later (server down, disk busy, lock held).
    Temporary,
    /// Trying again will not help (bad address, message refused for good).
    Permanent,
    /// The provider's configuration is wrong; the operator must fix it.
    Configuration,
    /// The provider panicked; the export macro caught it at the boundary.
    Panicked,
    /// The provider does not offer this operation.
    Unsupported,
    /// Out of space: the disk or a quota is full. Worth trying again once space is freed;
    /// the host treats it as temporary, and tells SMTP clients `452 4.3.1`.
    Full,
}

/// The ABI-stable wrapper of [`ErrorKind`].
pub type ErrorKindAbi = ErrorKind_NE;

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ErrorKind::Temporary => "temporary failure",
            ErrorKind::Permanent => "permanent failure",
            ErrorKind::Configuration => "configuration error",
            ErrorKind::Panicked => "panicked",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Full => "out of space",
        })
    }
}

/// A failed provider call: its kind and a message that says what went wrong.
///
/// The host adds the provider's name and the message id when it reports the error, so the
/// message only needs to say the cause ("connection refused by 127.0.0.1:25").
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ProviderError {
    kind: ErrorKindAbi,
    message: RString,
}

impl ProviderError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind: ErrorKindAbi::new(kind),
            message: RString::from(message.into()),
        }
    }

    /// Worth trying again later.
    pub fn temporary(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Temporary, message)
    }

    /// Trying again will not help.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// The configuration is wrong; the message should name the key and what was expected.
    /// [`OpenContext::config_as`](crate::OpenContext::config_as) and
    /// [`OpenContext::config_error`](crate::OpenContext::config_error) word it so.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }

    /// The provider does not offer this operation.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// The kind; an unknown kind from a newer provider reads as [`ErrorKind::Temporary`].
    pub fn kind(&self) -> ErrorKind {
        self.kind.as_enum().copied().unwrap_or(ErrorKind::Temporary)
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message)
    }
}

impl std::error::Error for ProviderError {}
