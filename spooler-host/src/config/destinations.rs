//! The `[destinations]` table: how many deliveries to one destination (a recipient domain,
//! per transport) run at once, Postfix's `default_destination_concurrency_limit`, and how
//! often one may start (`rate`, Postfix's `default_destination_rate_delay` turned round),
//! with per-domain overrides. The scheduling itself is the queue manager's
//! (`queue::destinations`).
//!
//! ```toml
//! [destinations]
//! concurrency = 20
//! rate = "100/min"                     # optional; per domain
//! [destinations.domains."slow.example"]
//! concurrency = 2
//! rate = "10/min"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Deliveries to one destination at once unless the profile says otherwise: Postfix's
/// default, enough for a big provider's mail exchangers, few enough that one domain never
/// takes every connection a transport has.
pub const DEFAULT_CONCURRENCY: usize = 20;

/// How a destination is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Deliveries at once.
    pub concurrency: usize,
    /// The least time between two deliveries' starts; none: no rate limit.
    pub interval: Option<Duration>,
}

/// How every destination is paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// For every domain without an override.
    pub default: Pace,
    /// Per domain (lowercase).
    pub domains: BTreeMap<String, Pace>,
}

impl DestinationPolicy {
    /// The pace of `domain`.
    pub fn pace(&self, domain: &str) -> Pace {
        self.domains.get(domain).copied().unwrap_or(self.default)
    }

    /// Whether any destination has a rate.
    pub fn has_rate(&self) -> bool {
        std::iter::once(&self.default)
            .chain(self.domains.values())
            .any(|pace| pace.interval.is_some())
    }
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        DestinationPolicy {
            default: Pace {
                concurrency: DEFAULT_CONCURRENCY,
                interval: None,
            },
            domains: BTreeMap::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestinations {
    concurrency: Option<usize>,
    rate: Option<String>,
    #[serde(default)]
    domains: BTreeMap<String, RawDomain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    concurrency: Option<usize>,
    rate: Option<String>,
}

/// The policy the table describes, or what is wrong with it.
pub(super) fn destination_policy(raw: RawDestinations) -> Result<DestinationPolicy, String> {
    let default = Pace {
        concurrency: concurrency(
            "destinations",
            raw.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        )?,
        interval: raw
            .rate
            .as_deref()
            .map(|rate| interval("destinations", rate))
            .transpose()?,
    };
    let mut domains = BTreeMap::new();
    for (domain, settings) in raw.domains {
        let key = format!("destinations.domains.\"{domain}\"");
        let pace = Pace {
            concurrency: match settings.concurrency {
                Some(value) => concurrency(&key, value)?,
                None => default.concurrency,
            },
            interval: match settings.rate.as_deref() {
                Some(rate) => Some(interval(&key, rate)?),
                None => default.interval,
            },
        };
        domains.insert(domain.to_ascii_lowercase(), pace);
    }
    Ok(DestinationPolicy { default, domains })
}

fn concurrency(table: &str, value: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!(
            "{table}.concurrency: expected at least 1 (a destination with none would never get \
             mail)"
        ))
    } else {
        Ok(value)
    }
}

/// The interval between starts of a rate such as `100/min` (`/s`, `/min`, `/h`).
fn interval(table: &str, rate: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{table}.rate: expected deliveries per time such as \"100/min\", \"5/s\" or \
             \"1000/h\", found `{rate}`"
        )
    };
    let (count, per) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let period = match per.trim() {
        "s" => Duration::from_secs(1),
        "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(bad());
    }
    Ok(period / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_text: &str) -> Result<DestinationPolicy, String> {
        let raw: RawDestinations = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        destination_policy(raw)
    }

    #[test]
    fn rates_and_overrides_are_read() {
        let read = policy(
            "concurrency = 10\nrate = \"120/min\"\n[domains.\"Slow.Example\"]\nconcurrency = 2\n",
        )
        .unwrap();
        assert_eq!(
            read.pace("other.example").interval,
            Some(Duration::from_millis(500))
        );
        let slow = read.pace("slow.example");
        assert_eq!(slow.concurrency, 2);
        assert_eq!(
            slow.interval,
            Some(Duration::from_millis(500)),
            "inherits the rate"
        );
        assert_eq!(DestinationPolicy::default().pace("x").interval, None);
    }

    #[test]
    fn a_bad_rate_or_concurrency_is_refused_naming_the_key() {
        let error = policy("rate = \"fast\"").unwrap_err();
        assert!(error.starts_with("destinations.rate: expected"), "{error}");
        let error = policy("[domains.\"a.example\"]\nconcurrency = 0").unwrap_err();
        assert!(
            error
                .starts_with("destinations.domains.\"a.example\".concurrency: expected at least 1"),
            "{error}"
        );
        assert!(policy("rate = \"0/s\"").is_err());
    }
}
