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
//! # Compatibility
//!
//! This crate follows semver, and its version is the ABI version ([`ABI_VERSION`]). A host
//! refuses a library built against another major version, naming both. Within a major
//! version, methods are only added at the end of a trait, with a default, and enums that
//! will grow ([`RecipientOutcome`], [`HookAction`], [`ErrorKind`], …) cross the boundary as
//! `abi_stable` non-exhaustive enums, so a library built against an older compatible version
//! keeps loading.

#![warn(missing_docs)]
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
