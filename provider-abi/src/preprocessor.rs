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
///
/// Build them with the methods below rather than the fields, which are ABI-stable types
/// (`ROption`, `RVec`) an author need not know:
///
/// ```
/// use provider_abi::{Address, Changes, Recipient, RecipientKind};
///
/// let list = Address::parse("LOCAL:team").unwrap();
/// let ann = Address::parse("ann@example.com").unwrap();
/// let changes = Changes::none()
///     .with_content(b"X-Expanded: team\r\nSubject: hi\r\n\r\nHello.\r\n".to_vec())
///     .removing(list)
///     .adding(Recipient::new(ann, RecipientKind::To))
///     .failing(Address::parse("FAX:0301").unwrap(), "no country code");
/// assert!(!changes.is_empty());
/// assert!(Changes::none().is_empty());
/// ```
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// New content for the message, for every recipient (see [`Preprocessor`]).
    pub content: ROption<RVec<u8>>,
    /// Recipients to add (e.g. the members of an expanded distribution list).
    pub add_recipients: RVec<Recipient>,
    /// Recipients to remove (e.g. the distribution list itself).
    pub remove_recipients: RVec<Address>,
    /// Recipients to fail with a non-delivery report.
    pub undeliverable: RVec<Undeliverable>,
}

impl Changes {
    /// No change: the message goes on as it came.
    pub fn none() -> Self {
        Changes::default()
    }

    /// These changes, and the message's content replaced by `content` (the whole message:
    /// header fields, an empty line, the body). It reaches every recipient, whatever its
    /// address type.
    pub fn with_content(mut self, content: Vec<u8>) -> Self {
        self.content = ROption::RSome(content.into());
        self
    }

    /// These changes, and `recipient` added to the message.
    pub fn adding(mut self, recipient: Recipient) -> Self {
        self.add_recipients.push(recipient);
        self
    }

    /// These changes, and the recipient `address` taken off the message.
    pub fn removing(mut self, address: Address) -> Self {
        self.remove_recipients.push(address);
        self
    }

    /// These changes, and the recipient `address` failed with a non-delivery report that
    /// gives `reason`.
    pub fn failing(mut self, address: Address, reason: impl Into<String>) -> Self {
        self.undeliverable.push(Undeliverable {
            address,
            reason: reason.into().into(),
        });
        self
    }

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
/// **New content is the message's, for every recipient**: a message is stored once, so
/// content a preprocessor sets reaches every recipient, `LOCAL` ones and those of every
/// other address type too, whatever [`address_types`](Preprocessor::address_types) says
/// (that only chooses which messages the preprocessor sees). To change what one address
/// type receives and not the others, do it where only those recipients are: in the
/// transport that claims the type, which is handed only its own recipients and can rewrite
/// the content it sends.
///
/// A preprocessor that marks every message it passes with a header field (the whole
/// content is replaced; the message is otherwise unchanged):
///
/// ```
/// use provider_abi::{Changes, MessageRef, Preprocessed, Preprocessor, ProviderError};
///
/// struct Marker;
///
/// impl Preprocessor for Marker {
///     fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError> {
///         let mut content = b"X-Checked-By: marker\r\n".to_vec();
///         content.extend_from_slice(&message.content);
///         Ok(Preprocessed::Accept(Changes::none().with_content(content)))
///     }
/// }
///
/// # use provider_abi::{Address, Envelope, StoredMessage};
/// # let envelope = Envelope::new(Address::parse("ann@example.com").unwrap(), vec![]);
/// # let message = StoredMessage { envelope, folder: "Outbox".into(), content: b"Subject: x\r\n\r\nbody".to_vec().into() };
/// let Preprocessed::Accept(changes) = Marker.process(message.as_ref()).unwrap() else {
///     panic!("accepted");
/// };
/// assert!(changes.content.unwrap().starts_with(b"X-Checked-By: marker\r\nSubject: x"));
/// ```
///
/// A preprocessor that rejects messages above a size and fails `FAX:` recipients without a
/// number:
///
/// ```
/// use provider_abi::{Changes, MessageRef, Preprocessed, Preprocessor, ProviderError};
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
///         let mut changes = Changes::none();
///         for recipient in message.envelope.recipients.iter() {
///             let number = recipient.address.address();
///             if recipient.address.has_type("FAX") && !number.starts_with('+') {
///                 changes = changes.failing(
///                     recipient.address.clone(),
///                     "a fax number starts with + and the country code",
///                 );
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
    ///
    /// Asked once, when the instance opens; this is what the host goes by, not the defaults
    /// given to [`Library::preprocessor`](crate::Library::preprocessor) (those stand only for
    /// an instance that did not open). The host warns, naming both lists, when an instance
    /// opened without a `config` table answers otherwise.
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
