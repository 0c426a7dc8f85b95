//! Preprocessors: they see an outbound message before routing and may change or reject it.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RString, RVec},
    StableAbi,
};

use crate::address::Address;
use crate::error::ProviderError;
use crate::guard::{guarded, strings, Guarded};
use crate::message::{MessageRef, Recipient};

/// A recipient a preprocessor found undeliverable, and why (it goes into the report).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Undeliverable {
    /// The recipient.
    pub address: Address,
    /// Why, for the non-delivery report.
    pub reason: RString,
}

/// The changes a preprocessor makes to a message. Empty fields change nothing.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// New content for the message.
    pub content: ROption<RVec<u8>>,
    /// Recipients to add (e.g. the members of an expanded distribution list).
    pub add_recipients: RVec<Recipient>,
    /// Recipients to remove (e.g. the distribution list itself).
    pub remove_recipients: RVec<Address>,
    /// Recipients to fail with a non-delivery report.
    pub undeliverable: RVec<Undeliverable>,
}

impl Changes {
    /// Whether these changes change nothing.
    pub fn is_empty(&self) -> bool {
        self.content.is_none()
            && self.add_recipients.is_empty()
            && self.remove_recipients.is_empty()
            && self.undeliverable.is_empty()
    }
}

/// A preprocessor's verdict on a message.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 256, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum Preprocessed {
    /// Go on, with these changes (possibly none).
    Accept(Changes),
    /// Reject the whole message; every pending recipient fails with this reason.
    Reject {
        /// Why, for the non-delivery report.
        reason: RString,
    },
}

/// The ABI-stable wrapper of [`Preprocessed`].
pub type PreprocessedAbi = Preprocessed_NE;

/// A preprocessor, as a provider author writes it.
pub trait Preprocessor: Send + 'static {
    /// The address types whose messages it wants to see; empty means every message.
    fn address_types(&self) -> Vec<String> {
        Vec::new()
    }

    /// Looks at `message` before routing.
    fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError>;
}

/// The FFI form of [`Preprocessor`]; the host calls this.
#[sabi_trait]
pub trait PreprocessorFfi: Send {
    /// See [`Preprocessor::address_types`].
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError>;
    /// See [`Preprocessor::process`].
    #[sabi(last_prefix_field)]
    fn process(&mut self, message: MessageRef<'_>) -> RResult<PreprocessedAbi, ProviderError>;
}

/// An open preprocessor as the host holds it.
pub type PreprocessorObject = PreprocessorFfi_TO<'static, RBox<()>>;

impl<T: Preprocessor> PreprocessorFfi for Guarded<T> {
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError> {
        guarded("address_types", || Ok(strings(self.0.address_types())))
    }

    fn process(&mut self, message: MessageRef<'_>) -> RResult<PreprocessedAbi, ProviderError> {
        guarded("process", || {
            self.0.process(message).map(PreprocessedAbi::new)
        })
    }
}
