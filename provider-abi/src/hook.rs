//! Message hooks: they run on inbound mail before it is stored (postprocessing) and on
//! outbound mail once it is finished, and decide where it goes.

use abi_stable::{
    sabi_trait,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};

use crate::error::ProviderError;
use crate::guard::{guarded, Guarded};
use crate::message::MessageRef;

/// Which way the message is going.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Arrived from a transport; not yet stored.
    Inbound,
    /// Every recipient is final; about to leave the Outbox.
    Outbound,
}

/// A message as a hook sees it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct HookMessage<'a> {
    /// Inbound or outbound.
    pub direction: Direction,
    /// The folder it is headed for, as the hooks before this one left it.
    pub folder: RStr<'a>,
    /// The message.
    pub message: MessageRef<'a>,
}

/// What a hook decides.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = 64, align = 8, traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum HookAction {
    /// Leave it where it is headed; the next hook runs.
    Leave,
    /// Send it to this folder instead; the next hook runs.
    MoveTo {
        /// The folder, created if it does not exist.
        folder: RString,
    },
    /// Delete it; no later hook runs.
    Delete,
    /// Keep it where it is headed; no later hook runs.
    Stop,
}

/// The ABI-stable wrapper of [`HookAction`].
pub type HookActionAbi = HookAction_NE;

/// A hook, as a provider author writes it.
///
/// The host runs the hooks in the profile's order on inbound mail before it is stored, and
/// on outbound mail once every recipient is final; each sees the folder the ones before it
/// chose. Each instance is called from one thread of its own. An error is logged and the
/// message goes on as if this hook had answered [`HookAction::Leave`]; a panic does the same,
/// and the host reopens the instance. See the crate documentation for everything the host
/// guarantees.
///
/// A hook that files inbound mail flagged as spam into `Junk`:
///
/// ```
/// use provider_abi::headers::header;
/// use provider_abi::{Direction, Hook, HookAction, HookMessage, ProviderError};
///
/// struct Junk;
///
/// impl Hook for Junk {
///     fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError> {
///         let flagged = header(&message.message.content, "X-Spam-Flag")
///             .is_some_and(|flag| flag.trim().eq_ignore_ascii_case("yes"));
///         Ok(if message.direction == Direction::Inbound && flagged {
///             HookAction::MoveTo { folder: "Junk".into() }
///         } else {
///             HookAction::Leave
///         })
///     }
/// }
///
/// # use provider_abi::{Address, Envelope, StoredMessage};
/// # let envelope = Envelope::new(Address::parse("ann@example.com").unwrap(), vec![]);
/// # let spam = StoredMessage { envelope, folder: "Inbox".into(), content: b"X-Spam-Flag: YES\r\n\r\nx".to_vec().into() };
/// let view = HookMessage { direction: Direction::Inbound, folder: "Inbox".into(), message: spam.as_ref() };
/// assert_eq!(Junk.run(view).unwrap(), HookAction::MoveTo { folder: "Junk".into() });
/// ```
pub trait Hook: Send + 'static {
    /// Decides what happens to `message`.
    fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError>;
}

/// The FFI form of [`Hook`]; the host calls this.
#[sabi_trait]
pub trait HookFfi: Send {
    /// See [`Hook::run`].
    #[sabi(last_prefix_field)]
    fn run(&mut self, message: HookMessage<'_>) -> RResult<HookActionAbi, ProviderError>;
}

/// An open hook as the host holds it.
pub type HookObject = HookFfi_TO<'static, RBox<()>>;

impl<T: Hook> HookFfi for Guarded<T> {
    fn run(&mut self, message: HookMessage<'_>) -> RResult<HookActionAbi, ProviderError> {
        guarded("run", || self.0.run(message).map(HookActionAbi::new))
    }
}
