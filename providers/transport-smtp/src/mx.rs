//! Where a domain's mail goes: its mail exchangers from DNS (RFC 5321 section 5.1), for
//! `mode = "mx"`.
//!
//! The MX records are taken in preference order, in random order among equal preferences
//! (so that equal exchangers share the load), and each exchanger's addresses are looked up
//! (A and AAAA). A domain without MX records is its own exchanger if it has an address (the
//! "implicit MX"). A single MX record for the root, `0 .`, is a null MX (RFC 7505): the
//! domain takes no mail, and its recipients fail at once. Every other way of finding no
//! exchanger is temporary (the domain may be being set up, or its DNS down): the host
//! defers the recipients, and fails them when its retry policy runs out.
//!
//! Lookups go to the system's resolver (`/etc/resolv.conf`) or to the one DNS server named
//! by `resolver`; answers are cached for their TTL by `hickory-resolver`, which runs on a
//! tokio runtime with one thread of its own (the transport's thread blocks on each lookup,
//! as it blocks on each SMTP reply). All the instances of the transport with the same DNS
//! settings share one directory (`Directory::shared`): with `parallel = 40`, a domain is
//! looked up once, not once per connection slot.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};

use crate::shared::{shared, InUse};

/// One mail exchanger: its name (for TLS and for the reports) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanger {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// Why a domain has no exchanger to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoExchanger {
    /// It publishes a null MX: it accepts no mail, ever (a permanent failure).
    NullMx,
    /// Nothing to connect to now (no such domain, no address, a DNS failure); the text says
    /// which. Temporary: the domain may appear or its DNS recover.
    NotNow(String),
}

/// The DNS, as the transport asks it.
pub struct Directory {
    runtime: tokio::runtime::Runtime,
    resolver: TokioResolver,
}

/// The directories in use, by DNS settings (the server, the timeout).
static IN_USE: InUse<(Option<SocketAddr>, Duration), Directory> = Mutex::new(Vec::new());

impl Directory {
    /// The directory of the instances asking `server` (or the system's resolvers) with
    /// `timeout`: the one they share, made if none is in use.
    pub fn shared(server: Option<SocketAddr>, timeout: Duration) -> Result<Arc<Directory>, String> {
        shared(&IN_USE, (server, timeout), || {
            Directory::new(server, timeout)
        })
    }

    /// A directory asking `server` (a DNS server's address), or the system's resolvers.
    /// Its runtime has one thread of its own, and any number of threads may wait on it.
    fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Directory, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("transport-smtp dns")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the resolver's runtime: {e}"))?;
        let _inside = runtime.enter();
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(server) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                let name_server = NameServerConfig::new(server.ip(), true, vec![udp, tcp]);
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    provider,
                )
            }
            None => Resolver::builder(provider).map_err(|e| {
                format!("cannot read the system's DNS settings (/etc/resolv.conf): {e}; set resolver = \"IP:53\"")
            })?,
        };
        builder.options_mut().timeout = timeout;
        builder.options_mut().attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the resolver: {e}"))?;
        drop(_inside);
        Ok(Directory { runtime, resolver })
    }

    /// The exchangers of `domain`, the most preferred first.
    pub fn exchangers(&self, domain: &str) -> Result<Vec<Exchanger>, NoExchanger> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let records = match self
            .runtime
            .block_on(self.resolver.mx_lookup(fqdn.as_str()))
        {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect(),
            Err(error) if error.is_nx_domain() => {
                return Err(NoExchanger::NotNow(format!(
                    "the domain {domain} does not exist (NXDOMAIN)"
                )))
            }
            Err(error) if error.is_no_records_found() => Vec::new(),
            Err(error) => {
                return Err(NoExchanger::NotNow(format!(
                    "cannot look up the MX records of {domain}: {error}"
                )))
            }
        };
        if records.is_empty() {
            // No MX: the domain itself, if it has an address (RFC 5321 section 5.1).
            let addresses = self.addresses(&fqdn, None).map_err(|why| {
                NoExchanger::NotNow(format!("{domain} has no MX record, and {why}"))
            })?;
            return Ok(vec![Exchanger {
                name: domain.to_owned(),
                addresses,
            }]);
        }
        let names = by_preference(records).ok_or(NoExchanger::NullMx)?;
        let mut exchangers = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self.addresses(&name, None) {
                Ok(addresses) => exchangers.push(Exchanger {
                    name: name.trim_end_matches('.').to_owned(),
                    addresses,
                }),
                Err(why) => missing.push(format!("{}: {why}", name.trim_end_matches('.'))),
            }
        }
        if exchangers.is_empty() {
            return Err(NoExchanger::NotNow(format!(
                "the mail exchangers of {domain} have no address ({})",
                missing.join("; ")
            )));
        }
        Ok(exchangers)
    }

    /// What `lookup` gives, waiting for it on the resolver's runtime at most `limit` if
    /// given; `None` if that ran out.
    fn wait<T>(&self, limit: Option<Duration>, lookup: impl Future<Output = T>) -> Option<T> {
        match limit {
            Some(limit) => self
                .runtime
                .block_on(async { tokio::time::timeout(limit, lookup).await })
                .ok(),
            None => Some(self.runtime.block_on(lookup)),
        }
    }

    /// The texts of `name`'s TXT records (each record's strings joined), or why there are
    /// none, waiting at most `limit` (some servers never answer TXT queries).
    pub fn txt(&self, name: &str, limit: Duration) -> Result<Vec<String>, String> {
        let answer = self
            .wait(Some(limit), self.resolver.txt_lookup(name))
            .ok_or_else(|| {
                format!(
                    "no answer for the TXT records of {name} within {} s",
                    limit.as_secs()
                )
            })?;
        match answer {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(error) if error.is_nx_domain() || error.is_no_records_found() => Ok(Vec::new()),
            Err(error) => Err(format!("cannot look up the TXT records of {name}: {error}")),
        }
    }

    /// The addresses (A and AAAA) of `name`, or why there are none, waiting at most `limit`
    /// if given (otherwise the resolver's own timeout and attempts).
    pub fn addresses(&self, name: &str, limit: Option<Duration>) -> Result<Vec<IpAddr>, String> {
        let answer = self
            .wait(limit, self.resolver.lookup_ip(name))
            .ok_or_else(|| {
                let limit = limit.unwrap_or_default().as_secs();
                format!("no answer for its address within {limit} s")
            })?;
        match answer {
            Ok(lookup) => {
                let addresses: Vec<IpAddr> = lookup.iter().collect();
                if addresses.is_empty() {
                    Err("it has no address".into())
                } else {
                    Ok(addresses)
                }
            }
            Err(error) if error.is_nx_domain() => Err("it does not exist (NXDOMAIN)".into()),
            Err(error) if error.is_no_records_found() => Err("it has no address".into()),
            Err(error) => Err(format!("cannot look up its address: {error}")),
        }
    }
}

/// The exchangers' names in the order to try them, or `None` for a null MX. Equal
/// preferences are shuffled; a root name among other records is not an exchanger.
fn by_preference(mut records: Vec<(u16, String)>) -> Option<Vec<String>> {
    if records.iter().all(|(_, name)| name == ".") {
        return None;
    }
    records.retain(|(_, name)| name != ".");
    let shuffle = RandomState::new();
    records.sort_by_key(|(preference, name)| (*preference, shuffle.hash_one(name)));
    Some(records.into_iter().map(|(_, name)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, n)| (*p, n.to_string())).collect()
    }

    #[test]
    fn exchangers_go_by_preference_and_equal_ones_in_random_order() {
        let order = by_preference(records(&[(20, "b."), (10, "a."), (30, "c.")]));
        assert_eq!(order, Some(vec!["a.".into(), "b.".into(), "c.".into()]));
        let orders: std::collections::HashSet<Vec<String>> = (0..64)
            .filter_map(|_| by_preference(records(&[(10, "x."), (10, "y."), (5, "w.")])))
            .collect();
        assert!(orders.iter().all(|o| o[0] == "w."), "{orders:?}");
        assert_eq!(
            orders.len(),
            2,
            "both orders of x and y come up: {orders:?}"
        );
    }

    #[test]
    fn a_lone_root_record_is_a_null_mx() {
        assert_eq!(by_preference(records(&[(0, ".")])), None);
        assert_eq!(
            by_preference(records(&[(0, "."), (10, "mx.")])),
            Some(vec!["mx.".into()])
        );
    }
}
