//! Provider calls whose answers the host reads as the same enums wherever it makes them:
//! a preprocessor's verdict and a hook's action, each checked to be of a kind this host
//! knows. An answer of a newer, unknown kind is a temporary error, never taken as "go on".

use provider_abi::abi_stable::std_types::RStr;
use provider_abi::preprocessor::PreprocessorObject;
use provider_abi::{
    Direction, HookAction, HookMessage, HookObject, MessageRef, Preprocessed, ProviderError,
};

/// The preprocessor's verdict on `message`.
pub fn preprocess(
    preprocessor: &mut PreprocessorObject,
    message: MessageRef<'_>,
) -> Result<Preprocessed, ProviderError> {
    preprocessor
        .process(message)
        .into_result()?
        .as_enum()
        .cloned()
        .map_err(|_| unknown("a verdict"))
}

/// What the hook says to do with `message`, going `direction`, bound for `folder`.
pub fn run_hook(
    hook: &mut HookObject,
    direction: Direction,
    folder: &str,
    message: MessageRef<'_>,
) -> Result<HookAction, ProviderError> {
    let view = HookMessage {
        direction,
        folder: RStr::from_str(folder),
        message,
    };
    hook.run(view)
        .into_result()?
        .as_enum()
        .cloned()
        .map_err(|_| unknown("an action"))
}

fn unknown(what: &str) -> ProviderError {
    ProviderError::temporary(format!("it answered with {what} this host does not know"))
}
