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
