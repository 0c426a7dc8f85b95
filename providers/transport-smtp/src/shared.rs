//! What the instances of the transport share: one value per settings (a resolver, a cache
//! of MTA-STS policies), made by the first instance that needs it and dropped with the
//! last that holds it. The instances live in the same library, so a static list is theirs.

use std::sync::{Arc, Mutex, Weak};

/// The values in use, by the settings they were made for.
pub type InUse<K, T> = Mutex<Vec<(K, Weak<T>)>>;

/// The value in `in_use` for `settings`, or a new one from `make`, kept there.
pub fn shared<K: PartialEq, T, E>(
    in_use: &InUse<K, T>,
    settings: K,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<Arc<T>, E> {
    let mut in_use = in_use
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    in_use.retain(|(_, value)| value.strong_count() > 0);
    if let Some(value) = in_use
        .iter()
        .filter(|(used, _)| *used == settings)
        .find_map(|(_, value)| value.upgrade())
    {
        return Ok(value);
    }
    let value = Arc::new(make()?);
    in_use.push((settings, Arc::downgrade(&value)));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_settings_while_someone_holds_it() {
        static IN_USE: InUse<u16, String> = Mutex::new(Vec::new());
        let make = |text: &str| Ok::<_, ()>(text.to_owned());
        let first = shared(&IN_USE, 1, || make("a")).unwrap();
        let again = shared(&IN_USE, 1, || make("b")).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the same settings share it");
        let other = shared(&IN_USE, 2, || make("c")).unwrap();
        assert_eq!(*other, "c");
        drop((first, again));
        assert_eq!(
            *shared(&IN_USE, 1, || make("d")).unwrap(),
            "d",
            "made afresh"
        );
    }
}
