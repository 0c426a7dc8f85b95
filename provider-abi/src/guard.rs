//! The panic barrier: every call into provider code passes through [`guarded`].
//!
//! `abi_stable` aborts the whole process when a panic reaches an `extern "C"` boundary. The
//! host must instead treat a panicking provider as a fault of that provider alone, so every
//! entry point catches the panic on the provider's side and returns it as an error.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RResult, RString, RVec};

use crate::error::{ErrorKind, ProviderError};

/// A provider value behind the FFI traits; its methods run inside [`guarded`].
pub struct Guarded<T>(pub(crate) T);

/// Runs `call`, turning a panic into a [`ErrorKind::Panicked`] error that names `operation`.
pub fn guarded<T>(
    operation: &str,
    call: impl FnOnce() -> Result<T, ProviderError>,
) -> RResult<T, ProviderError> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(ProviderError::new(
            ErrorKind::Panicked,
            format!("{operation} panicked: {}", panic_message(payload.as_ref())),
        )),
    }
}

/// Converts a provider's list of names for the boundary.
pub(crate) fn strings(names: Vec<String>) -> RVec<RString> {
    names.into_iter().map(RString::from).collect()
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not text)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_naming_the_operation() {
        let result: RResult<(), _> = guarded("submit", || panic!("disk on fire"));
        let error = result.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Panicked);
        assert_eq!(error.message(), "submit panicked: disk on fire");
    }
}
