//! The `[destinations]` table: how many deliveries to one destination (a recipient domain,
//! per transport) run at once, Postfix's `default_destination_concurrency_limit`, with
//! per-domain overrides. The scheduling itself is the queue manager's
//! (`queue::destinations`).
//!
//! ```toml
//! [destinations]
//! concurrency = 20
//! [destinations.domains."slow.example"]
//! concurrency = 2
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// Deliveries to one destination at once unless the profile says otherwise: Postfix's
/// default, enough for a big provider's mail exchangers, few enough that one domain never
/// takes every connection a transport has.
pub const DEFAULT_CONCURRENCY: usize = 20;

/// How many deliveries each destination gets at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// For every domain without an override.
    pub concurrency: usize,
    /// Per domain (lowercase).
    pub domains: BTreeMap<String, usize>,
}

impl DestinationPolicy {
    /// The concurrency of `domain`.
    pub fn concurrency(&self, domain: &str) -> usize {
        self.domains
            .get(domain)
            .copied()
            .unwrap_or(self.concurrency)
    }
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        DestinationPolicy {
            concurrency: DEFAULT_CONCURRENCY,
            domains: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestinations {
    concurrency: Option<usize>,
    #[serde(default)]
    domains: BTreeMap<String, RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    concurrency: usize,
}

/// The policy the table describes, or what is wrong with it.
pub(super) fn destination_policy(raw: RawDestinations) -> Result<DestinationPolicy, String> {
    let at_least_one = |key: String, value: usize| {
        if value == 0 {
            Err(format!(
                "{key}: expected at least 1 (a destination with none would never get mail)"
            ))
        } else {
            Ok(value)
        }
    };
    let concurrency = at_least_one(
        "destinations.concurrency".into(),
        raw.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
    )?;
    let mut domains = BTreeMap::new();
    for (domain, settings) in raw.domains {
        let key = format!("destinations.domains.\"{domain}\".concurrency");
        domains.insert(
            domain.to_ascii_lowercase(),
            at_least_one(key, settings.concurrency)?,
        );
    }
    Ok(DestinationPolicy {
        concurrency,
        domains,
    })
}
