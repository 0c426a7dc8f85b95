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
///
/// The host hands it each outbound message with a recipient of its
/// [`address_types`](Preprocessor::address_types) once, before routing, in the profile's
/// order of preprocessors; the verdicts are stored before the message is routed. Each
/// instance is called from one thread of its own. An error defers the message (it is
/// preprocessed again at its next attempt); a panic does too, and the host reopens the
/// instance. See the crate documentation for everything the host guarantees.
///
/// A preprocessor that rejects messages above a size and fails `FAX:` recipients without a
/// number:
///
/// ```
/// use provider_abi::{
///     Changes, MessageRef, Preprocessed, Preprocessor, ProviderError, Undeliverable,
/// };
///
/// struct Limits {
///     max_bytes: usize,
/// }
///
/// impl Preprocessor for Limits {
///     fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError> {
///         if message.content.len() > self.max_bytes {
///             return Ok(Preprocessed::Reject {
///                 reason: format!("larger than {} bytes", self.max_bytes).into(),
///             });
///         }
///         let mut changes = Changes::default();
///         for recipient in message.envelope.recipients.iter() {
///             let number = recipient.address.address();
///             if recipient.address.has_type("FAX") && !number.starts_with('+') {
///                 changes.undeliverable.push(Undeliverable {
///                     address: recipient.address.clone(),
///                     reason: "a fax number starts with + and the country code".into(),
///                 });
///             }
///         }
///         Ok(Preprocessed::Accept(changes))
///     }
/// }
///
/// # use provider_abi::{Address, Envelope, Recipient, RecipientKind, StoredMessage};
/// # let fax = Recipient::new(Address::parse("FAX:030123").unwrap(), RecipientKind::To);
/// # let envelope = Envelope::new(Address::parse("ann@example.com").unwrap(), vec![fax]);
/// # let message = StoredMessage { envelope, folder: "Outbox".into(), content: b"x".to_vec().into() };
/// let mut limits = Limits { max_bytes: 1024 };
/// let Preprocessed::Accept(changes) = limits.process(message.as_ref()).unwrap() else {
///     panic!("accepted");
/// };
/// assert_eq!(changes.undeliverable.len(), 1);
/// ```
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
