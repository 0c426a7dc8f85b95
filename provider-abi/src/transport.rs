//! Transports: they take outbound messages to a messaging system and bring inbound ones back.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::address::Address;
use crate::error::ProviderError;
use crate::guard::{guarded, strings, Guarded};
use crate::message::{InboundMessage, MessageRef};

/// A transport's answer about one recipient it was asked to deliver.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 192, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum RecipientOutcome {
    /// The messaging system took responsibility for it.
    Delivered {
        /// The system's answer, e.g. `250 2.0.0 Ok: queued as 4F2A1B`.
        answer: RString,
    },
    /// Not now; the host tries again later.
    Deferred {
        /// At the earliest after this many seconds, if the system said so.
        retry_after_secs: ROption<u32>,
        /// Why, e.g. `connection refused by 127.0.0.1:25`.
        reason: RString,
    },
    /// It cannot be delivered; the host sends a non-delivery report.
    Failed {
        /// The RFC 3463 status code, e.g. `5.1.1`.
        status_code: RString,
        /// The system's own words, e.g. `smtp; 550 5.1.1 <bob@example.com>: no such user`.
        diagnostic: RString,
        /// A sentence for the report's reader.
        text: RString,
    },
    /// This transport does not handle this address after all; the host offers the recipient
    /// to the next transport claiming its type.
    NotMine,
}

/// The ABI-stable wrapper of [`RecipientOutcome`].
pub type RecipientOutcomeAbi = RecipientOutcome_NE;

impl RecipientOutcome {
    /// Delivered, with the system's answer.
    pub fn delivered(answer: impl Into<String>) -> Self {
        RecipientOutcome::Delivered {
            answer: answer.into().into(),
        }
    }

    /// Deferred, with the reason and an optional earliest retry.
    pub fn deferred(reason: impl Into<String>, retry_after_secs: Option<u32>) -> Self {
        RecipientOutcome::Deferred {
            retry_after_secs: retry_after_secs.into(),
            reason: reason.into().into(),
        }
    }

    /// Failed for good.
    pub fn failed(
        status_code: impl Into<String>,
        diagnostic: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        RecipientOutcome::Failed {
            status_code: status_code.into().into(),
            diagnostic: diagnostic.into().into(),
            text: text.into().into(),
        }
    }
}

/// Whether `text` is an RFC 3463 enhanced status code (`5.1.1`, `4.2.2`): class 2, 4 or 5,
/// then a subject and a detail of one to three digits each. What a failed outcome's
/// `status_code` should be, and what to look for at the start of a server's reply.
///
/// ```
/// use provider_abi::transport::is_enhanced_status_code;
///
/// assert!(is_enhanced_status_code("5.1.10"));
/// assert!(!is_enhanced_status_code("5.x.1"));
/// assert!(!is_enhanced_status_code("550"));
/// ```
pub fn is_enhanced_status_code(text: &str) -> bool {
    let mut parts = text.split('.');
    let number = |part: Option<&str>| {
        part.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    matches!(parts.next(), Some("2" | "4" | "5"))
        && number(parts.next())
        && number(parts.next())
        && parts.next().is_none()
}

/// A transport, as a provider author writes it.
///
/// The host calls each instance from one thread of its own, so it needs no locking; with
/// `parallel = N` it opens N instances, one per thread. An error from
/// [`submit`](Transport::submit) defers every recipient of the call; a panic does too, and
/// the host then reopens the instance. See the crate documentation for everything the host
/// guarantees.
///
/// A transport for `LOOP:` addresses that hands every message back as inbound mail: it
/// answers one outcome per recipient, refuses what is not its own with
/// [`RecipientOutcome::NotMine`], and keeps inbound mail until the host acknowledges it.
///
/// ```
/// use provider_abi::{
///     Address, InboundMessage, MessageRef, ProviderError, RecipientOutcome, Transport,
/// };
///
/// #[derive(Default)]
/// struct Loopback {
///     waiting: Vec<(String, Vec<u8>)>,
///     last_id: u64,
/// }
///
/// impl Transport for Loopback {
///     fn address_types(&self) -> Vec<String> {
///         vec!["LOOP".into()]
///     }
///
///     fn submit(
///         &mut self,
///         message: MessageRef<'_>,
///         recipients: &[Address],
///     ) -> Result<Vec<RecipientOutcome>, ProviderError> {
///         Ok(recipients
///             .iter()
///             .map(|recipient| {
///                 if recipient.address() == "nobody" {
///                     return RecipientOutcome::NotMine;
///                 }
///                 self.last_id += 1;
///                 self.waiting.push((self.last_id.to_string(), message.content.to_vec()));
///                 RecipientOutcome::delivered(format!("looped back as {}", self.last_id))
///             })
///             .collect())
///     }
///
///     fn pull(&mut self) -> Result<Vec<InboundMessage>, ProviderError> {
///         // Nothing is removed here: the host acknowledges what it has stored.
///         Ok(self
///             .waiting
///             .iter()
///             .map(|(id, content)| InboundMessage {
///                 source_id: id.as_str().into(),
///                 sender: None.into(),
///                 recipients: Default::default(),
///                 content: content.clone().into(),
///             })
///             .collect())
///     }
///
///     fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
///         self.waiting.retain(|(id, _)| id != source_id);
///         Ok(())
///     }
///
///     fn poll_interval_secs(&self) -> Option<u32> {
///         Some(30)
///     }
/// }
///
/// # use provider_abi::{Envelope, StoredMessage};
/// # let recipients = vec![Address::parse("LOOP:alice").unwrap(), Address::parse("LOOP:nobody").unwrap()];
/// # let envelope = Envelope::new(Address::parse("ann@example.com").unwrap(), vec![]);
/// # let message = StoredMessage { envelope, folder: "Outbox".into(), content: b"x".to_vec().into() };
/// let mut transport = Loopback::default();
/// let outcomes = transport.submit(message.as_ref(), &recipients).unwrap();
/// assert!(matches!(outcomes[..], [RecipientOutcome::Delivered { .. }, RecipientOutcome::NotMine]));
/// let inbound = transport.pull().unwrap();
/// transport.acknowledge(&inbound[0].source_id).unwrap();
/// assert!(transport.pull().unwrap().is_empty());
/// ```
pub trait Transport: Send + 'static {
    /// The address types this instance claims (`SMTP`, `FAX`); usually from its configuration.
    ///
    /// Asked once, when the instance opens; this is what the host routes by, not the
    /// defaults given to [`Library::transport`](crate::Library::transport) (those stand only
    /// for an instance that did not open). Without configuration, answer those defaults: the
    /// host warns, naming both lists, when an instance opened without a `config` table
    /// claims others.
    fn address_types(&self) -> Vec<String>;

    /// Delivers `message` to `recipients`, all of a type this transport claims. Returns one
    /// outcome per recipient, in order.
    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError>;

    /// Returns inbound messages waiting in the messaging system, without removing them
    /// there: the host acknowledges each one after the store committed it.
    fn pull(&mut self) -> Result<Vec<InboundMessage>, ProviderError> {
        Ok(Vec::new())
    }

    /// The store committed the message with this [`InboundMessage::source_id`]; the
    /// transport may now delete it at the source.
    fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
        let _ = source_id;
        Ok(())
    }

    /// An operator or client asked to deliver and fetch now.
    fn flush(&mut self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Whether its messaging system is reachable now; messages for an offline transport wait.
    fn is_online(&mut self) -> bool {
        true
    }

    /// How often the host should call [`pull`](Transport::pull), in seconds; `None` for
    /// transports without inbound mail or that notify the host themselves.
    fn poll_interval_secs(&self) -> Option<u32> {
        None
    }

    /// Whether each recipient domain is a destination of its own: true for a transport that
    /// delivers to every domain's own servers (MX delivery), false (the default) for one
    /// that sends everything to one place (a smart host, a folder, a gateway).
    ///
    /// Asked once, when the instance opens. When true, the host calls
    /// [`submit`](Transport::submit) once per domain of a message (never with recipients of
    /// two domains together), runs at most `[destinations] concurrency` calls per domain at
    /// once, and backs a domain off as a whole when a call could not reach it (every
    /// recipient deferred for a connection failure). Since 1.5; a transport built against an
    /// older version is one place.
    fn delivers_per_domain(&self) -> bool {
        false
    }
}

/// The FFI form of [`Transport`]; the host calls this.
#[sabi_trait]
pub trait TransportFfi: Send {
    /// See [`Transport::address_types`].
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError>;
    /// See [`Transport::submit`].
    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: RSlice<'_, Address>,
    ) -> RResult<RVec<RecipientOutcomeAbi>, ProviderError>;
    /// See [`Transport::pull`].
    fn pull(&mut self) -> RResult<RVec<InboundMessage>, ProviderError>;
    /// See [`Transport::acknowledge`].
    fn acknowledge(&mut self, source_id: RStr<'_>) -> RResult<(), ProviderError>;
    /// See [`Transport::flush`].
    fn flush(&mut self) -> RResult<(), ProviderError>;
    /// See [`Transport::is_online`].
    fn is_online(&mut self) -> RResult<bool, ProviderError>;
    /// See [`Transport::poll_interval_secs`].
    #[sabi(last_prefix_field)]
    fn poll_interval_secs(&self) -> RResult<ROption<u32>, ProviderError>;

    /// See [`Transport::delivers_per_domain`]. Since 1.5; a transport built against an
    /// older version sends everything to one place.
    fn delivers_per_domain(&self) -> RResult<bool, ProviderError> {
        RResult::ROk(false)
    }
}

/// An open transport as the host holds it.
pub type TransportObject = TransportFfi_TO<'static, RBox<()>>;

impl<T: Transport> TransportFfi for Guarded<T> {
    fn address_types(&self) -> RResult<RVec<RString>, ProviderError> {
        guarded("address_types", || Ok(strings(self.0.address_types())))
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: RSlice<'_, Address>,
    ) -> RResult<RVec<RecipientOutcomeAbi>, ProviderError> {
        guarded("submit", || {
            let outcomes = self.0.submit(message, recipients.as_slice())?;
            Ok(outcomes.into_iter().map(RecipientOutcomeAbi::new).collect())
        })
    }

    fn pull(&mut self) -> RResult<RVec<InboundMessage>, ProviderError> {
        guarded("pull", || self.0.pull().map(RVec::from))
    }

    fn acknowledge(&mut self, source_id: RStr<'_>) -> RResult<(), ProviderError> {
        guarded("acknowledge", || self.0.acknowledge(source_id.as_str()))
    }

    fn flush(&mut self) -> RResult<(), ProviderError> {
        guarded("flush", || self.0.flush())
    }

    fn is_online(&mut self) -> RResult<bool, ProviderError> {
        guarded("is_online", || Ok(self.0.is_online()))
    }

    fn poll_interval_secs(&self) -> RResult<ROption<u32>, ProviderError> {
        guarded("poll_interval_secs", || {
            Ok(self.0.poll_interval_secs().into())
        })
    }

    fn delivers_per_domain(&self) -> RResult<bool, ProviderError> {
        guarded("delivers_per_domain", || Ok(self.0.delivers_per_domain()))
    }
}
