//! The frames' tags: the calls the host makes of an isolated instance (on the calls socket,
//! each answered by one reply) and the events the child sends of its own accord (on the
//! events socket: notices, status changes, log records).
//!
//! A call's frame carries its arguments after the tag; content, where a call has some, is in
//! the shared mapping and the frame names its length. The reply is [`OK`] and the method's
//! result, or [`FAILED`] and a provider error.

/// Opens the instance: the configuration text follows.
pub const OPEN: u8 = 1;
/// `address_types()` of a transport or a preprocessor.
pub const ADDRESS_TYPES: u8 = 2;
/// `Transport::submit`: envelope, content length, recipients.
pub const SUBMIT: u8 = 3;
/// `Transport::pull`.
pub const PULL: u8 = 4;
/// `Transport::acknowledge`: the source id.
pub const ACKNOWLEDGE: u8 = 5;
/// `Transport::flush`.
pub const FLUSH: u8 = 6;
/// `Transport::is_online`.
pub const IS_ONLINE: u8 = 7;
/// `Transport::poll_interval_secs`.
pub const POLL_INTERVAL: u8 = 8;
/// `Preprocessor::process`: envelope, content length.
pub const PROCESS: u8 = 9;
/// `Hook::run`: envelope, content length, direction, folder.
pub const RUN: u8 = 10;
/// `Transport::delivers_per_domain`.
pub const DELIVERS_PER_DOMAIN: u8 = 11;

/// A reply: the call returned this.
pub const OK: u8 = 0;
/// A reply: the call failed with this provider error.
pub const FAILED: u8 = 1;

/// An event: the provider called `Host::notify`.
pub const NOTICE: u8 = 1;
/// An event: the provider called `Host::set_status`.
pub const STATUS: u8 = 2;
/// An event: a log record of the provider's.
pub const LOG: u8 = 3;

/// The name of a call, for messages.
pub fn name(tag: u8) -> &'static str {
    match tag {
        OPEN => "open",
        ADDRESS_TYPES => "address_types",
        SUBMIT => "submit",
        PULL => "pull",
        ACKNOWLEDGE => "acknowledge",
        FLUSH => "flush",
        IS_ONLINE => "is_online",
        POLL_INTERVAL => "poll_interval_secs",
        PROCESS => "process",
        RUN => "run",
        _ => "an unknown call",
    }
}
