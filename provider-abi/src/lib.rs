//! The stable ABI between the spooler host and its provider libraries.
//!
//! A provider library is a `cdylib` that depends on this crate alone. It describes its
//! providers in a [`Library`] and exports it with [`export_library!`]; the host loads the
//! file from its providers folder, checks the ABI, reads the [`Manifest`] and opens the
//! providers its configuration names. Four kinds exist, each an idiomatic Rust trait here:
//!
//! - [`Store`]: the message store (Outbox, Sent Items, Inbox, folders, per-recipient status);
//! - [`Transport`]: moves messages of some address types (`SMTP`, `FAX`) to and from a
//!   messaging system, answering per recipient;
//! - [`Preprocessor`]: rewrites, expands or rejects outbound messages before routing;
//! - [`Hook`]: decides where inbound and finished outbound messages go.
//!
//! Behind each trait is an `#[sabi_trait]` FFI object ([`TransportFfi`] and so on) that the
//! host calls. The bridge between them catches panics, so a panicking provider becomes an
//! error of [`ErrorKind::Panicked`] instead of aborting the host, and the provider's `log`
//! records appear in the host's log.
//!
//! # A complete transport
//!
//! This is a whole provider library: a transport that claims `NULL` addresses and accepts
//! every message. Its `Cargo.toml` needs `crate-type = ["cdylib"]` and `provider-abi`.
//!
//! ```
//! use provider_abi::{
//!     export_library, Address, Library, MessageRef, OpenContext, ProviderError,
//!     RecipientOutcome, Transport,
//! };
//!
//! struct NullTransport;
//!
//! impl Transport for NullTransport {
//!     fn address_types(&self) -> Vec<String> {
//!         vec!["NULL".into()]
//!     }
//!
//!     fn submit(
//!         &mut self,
//!         message: MessageRef<'_>,
//!         recipients: &[Address],
//!     ) -> Result<Vec<RecipientOutcome>, ProviderError> {
//!         log::info!("discarding {} bytes for {} recipients", message.content.len(), recipients.len());
//!         Ok(recipients.iter().map(|_| RecipientOutcome::delivered("discarded")).collect())
//!     }
//! }
//!
//! fn open(context: &OpenContext) -> Result<NullTransport, ProviderError> {
//!     if !context.config().trim().is_empty() {
//!         return Err(ProviderError::configuration("the null transport takes no settings"));
//!     }
//!     Ok(NullTransport)
//! }
//!
//! fn library() -> Library {
//!     Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
//!         .transport("null", &["NULL"], open)
//! }
//!
//! export_library!(library);
//! # fn main() {}
//! ```
//!
//! # Reading the configuration
//!
//! Each instance gets its TOML table from the host's profile. Read it into a
//! `#[derive(Deserialize)]` struct with [`OpenContext::config_as`]; with
//! `#[serde(deny_unknown_fields)]` a misspelt key is refused, and every error names the
//! instance, the key, the line and what was expected (see [`config`]); the host rewrites it
//! to name the profile's file and the line the operator wrote the key on. Word the checks
//! serde cannot make with [`OpenContext::config_error`], so that they read alike and point
//! there too.
//!
//! # What the host guarantees, and what it expects
//!
//! What follows is what `spooler-host` does today; a provider may rely on it.
//!
//! **Threads.** The host opens each instance on a thread of its own, calls it only from that
//! thread, and drops it there: an instance needs no locking. A transport, preprocessor or
//! hook with `parallel = N` in the profile is opened N times, one instance per thread, and
//! each takes the next job from one shared queue; the instances share nothing unless the
//! provider shares it (a `static`), so two of them must not trip over each other (two
//! connections to one server are fine; two writers of one file need a lock). The store is
//! opened once, on the store thread, and every store call comes from that thread. Threads a
//! provider starts itself (a watcher) may use [`Host`] (`notify`, `set_status`) and `log`.
//!
//! **Ordering.** An outbound message goes through the preprocessors one after the other, in
//! the profile's order, each seeing the changes of those before; their result is stored
//! before the message is routed. Then each transport claiming some of its recipients gets a
//! call for them (Bcc recipients get calls of their own); different transports may have the
//! same message at the same time, one instance never has it twice at once. Once every
//! recipient is final, the hooks run one after the other, in the profile's order. Inbound mail goes
//! [`pull`](Transport::pull), then the hooks, then [`Store::commit`], and only then
//! [`acknowledge`](Transport::acknowledge), one source id at a time. The host promises no
//! order between messages: retries and parallel instances reorder them.
//!
//! **Errors.** An error is about the call, not the instance: the instance stays open. A
//! transport's error defers every recipient of that call (tried again later); a
//! preprocessor's defers the message (preprocessed again at its next attempt); a hook's is
//! logged and the message goes on without that hook; a failed `pull` is tried again at the
//! next poll; a failed store call is retried after a pause. Choose the [`ErrorKind`]: a
//! [`RecipientOutcome::Failed`] is the way to fail a recipient for good.
//!
//! **Panics.** The bridge catches a panic at the boundary and the call fails with
//! [`ErrorKind::Panicked`], handled like any error of that call; in addition the instance is
//! taken to be broken: it is dropped on its thread and opened again before its next job,
//! after a pause that doubles with each panic in a row (1 s up to 60 s). Until then its jobs
//! fail at once, so their messages are deferred. A panic while opening is a failed open, with
//! the same pauses. (A library built with `panic = "abort"` takes the host down instead:
//! keep the default, `unwind`.)
//!
//! **Crashes.** A native fault (a segfault, `abort`, a stack overflow, running out of
//! memory, `exit`) is not a panic: it ends the process the provider runs in. Unless the
//! operator says otherwise, a library not shipped with the host runs each instance in a child
//! process of its own: the host's executable run again, loading this same library through
//! this same interface, so nothing in a provider changes. Its `Host` services and `log`
//! records reach the host as usual. When that process dies, the call fails, its messages are
//! deferred, and a fresh process is opened after the same pauses as after a panic; statics
//! start anew then. A message in the call each time a provider's process died (three times by
//! default) is held for an operator, isolated or not.
//!
//! **Timeouts.** A transport, preprocessor or hook call that runs longer than its instance's
//! `timeout` (600 s unless the profile says otherwise) is abandoned: its messages are
//! deferred, and a freshly opened instance on a new thread takes the stuck one's place. The
//! stuck thread keeps its instance until the call returns, then drops it; so for a while two
//! instances may be alive even with `parallel = 1`. Store calls are never abandoned.
//!
//! **Durability.** When [`Store::commit`] returns `Ok`, the whole batch must be durable (on
//! disk, or committed by the database): the host then answers the client that submitted,
//! acknowledges inbound mail at its source and forgets what it did. Locks taken by
//! [`Store::lock_due`] need not survive a reopen. A transport answers
//! [`RecipientOutcome::Delivered`] only when the messaging system has taken the message for
//! good (a file synced, a `250` to the end of `DATA`): the host never sends it again. A
//! [`pull`](Transport::pull) must not remove anything at the source; only
//! [`acknowledge`](Transport::acknowledge) may, since the host may stop between the two and
//! pull the same messages again after a restart.
//!
//! The `provider-testkit` crate, beside this one in the spooler's repository, checks a
//! provider against these rules without the host: add it as a dev-dependency.
//!
//! # Compatibility
//!
//! This crate follows semver, and its version is the ABI version ([`ABI_VERSION`]). A host
//! refuses a library built against another major version, naming both. Within a major
//! version, methods are only added at the end of a trait, with a default, and enums that
//! will grow ([`RecipientOutcome`], [`HookAction`], [`ErrorKind`], …) cross the boundary as
//! `abi_stable` non-exhaustive enums, so a library built against an older compatible version
//! keeps loading.

#![deny(missing_docs)]
// abi_stable 0.11's derives and #[sabi_trait] put impls inside constants.
#![allow(non_local_definitions)]

pub mod address;
pub mod config;
pub mod error;
pub mod export;
pub mod guard;
pub mod headers;
pub mod hook;
pub mod host;
pub mod library;
pub mod logging;
pub mod message;
pub mod preprocessor;
pub mod store;
pub mod transport;

#[cfg(test)]
mod fuzz;

pub use abi_stable;
pub use address::{Address, AddressError};
pub use error::{ErrorKind, ProviderError};
pub use export::{Library, OpenContext};
pub use hook::{Direction, Hook, HookAction, HookFfi, HookMessage, HookObject};
pub use host::{Host, HostServices, LogSink, Notice, ProviderState};
pub use library::{Manifest, ProviderInfo, ProviderKind, ProviderLibraryRef, ABI_VERSION};
pub use message::{
    DeliveryState, Envelope, InboundMessage, MessageId, MessageRef, Priority, Property, Recipient,
    RecipientKind, RecipientStatus, ReportRequest, StoredMessage, Timestamp,
};
pub use preprocessor::{Changes, Preprocessed, Preprocessor, PreprocessorFfi, Undeliverable};
pub use store::{Store, StoreBatch, StoreFfi};
pub use transport::{RecipientOutcome, Transport, TransportFfi};

/// What [`export_library!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::error::ProviderError;
    pub use crate::library::{OpenArgs, ProviderLibrary, ProviderLibraryRef};
    pub use abi_stable::library::{
        __call_root_module_loader as call_root_module_loader, CheckTypeLayout, LibHeader,
        RootModuleResult,
    };
    pub use abi_stable::prefix_type::PrefixTypeTrait;
    pub use abi_stable::std_types::RResult;
}

/// The README's provider example is compiled and run as a doc test, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_export_macro_uses_the_symbol_abi_stable_looks_up() {
        let exported = include_str!("export.rs")
            .lines()
            .find_map(|line| line.trim().strip_prefix("#[export_name = \""))
            .and_then(|rest| rest.strip_suffix("\"]"));
        assert_eq!(exported, Some(abi_stable::library::ROOT_MODULE_LOADER_NAME));
    }
}
