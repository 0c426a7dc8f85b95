//! Provider instances in processes of their own (`isolate = true`): a native fault in a
//! provider (a segfault, `abort`, a stack overflow, `exit`, running out of memory) kills its
//! process, not the host.
//!
//! The host starts a child by running its own executable again in a runner mode
//! (`spooler-host run-provider`, [`child`]); the child loads the same library file with the
//! same loader and opens the one instance. On the host's side ([`proxy`]) the instance is an
//! object implementing the same provider-abi interface as a library's, so the rest of the host
//! is unchanged: workers call it, and a dead child is a failed call, reopened (a fresh child)
//! after the same backoff as a panic. Frames (`wire`, `calls`) cross on two Unix sockets;
//! message content goes through a shared memory file ([`content`]).

pub(crate) mod calls;
pub mod child;
pub mod content;
pub mod proxy;
pub(crate) mod wire;

/// The libraries shipped with the host, by their manifests' names: they run in the host's
/// process unless the profile says `isolate = true`. Every other library runs isolated unless
/// the profile says `isolate = false`: code from elsewhere is what a host must survive, and
/// the price of a process is small beside a day without mail (see the README, "When a
/// provider crashes").
const BUNDLED: &[&str] = &[
    "hook-rules",
    "preprocessor-distlist",
    "preprocessor-dkim",
    "store-embedded",
    "store-postgres",
    "transport-directory",
    "transport-local",
    "transport-pop3",
    "transport-smtp",
];

/// True for a library shipped with the host.
pub fn is_bundled(library: &str) -> bool {
    BUNDLED.contains(&library)
}
