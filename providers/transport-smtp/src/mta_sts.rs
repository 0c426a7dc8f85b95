//! MTA-STS (RFC 8461): a domain's published rule that mail to it goes only over verified TLS
//! to the mail exchangers it names, for `mode = "mx"`.
//!
//! A domain announces a policy with a TXT record at `_mta-sts.<domain>` (`v=STSv1; id=…;`)
//! and serves it at `https://mta-sts.<domain>/.well-known/mta-sts.txt`, over TLS that must
//! verify. The policy's `mode` says what a sender does with it:
//! - `enforce`: only exchangers matching one of its `mx` patterns are tried, only with
//!   STARTTLS and a certificate that verifies for the exchanger's name; when none can be
//!   reached that way the recipients are deferred (never sent in the clear instead);
//! - `testing`: mail goes as without a policy, and what `enforce` would have refused is
//!   logged;
//! - `none`: no policy.
//!
//! A fetched policy is kept for its `max_age`. The TXT record is asked on every delivery
//! (the resolver caches it for its TTL): a new `id` fetches the policy again, no record or
//! a failed fetch keeps using the cached one (this is what makes a policy hold against an
//! attacker who strips the TXT record). With no cached policy, a failed fetch means no
//! policy, as the RFC says: a sender's first contact cannot be protected. A failed fetch is
//! not tried again for the same announcement for 5 minutes, and a fetch waits at most 10 s
//! a step, so a domain whose policy server is down does not hold up every connection.
//!
//! The cache is in memory, one for all the transport's instances with the same settings; a
//! restart fetches again.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::mx::Directory;
use crate::shared::{shared, InUse};

/// What a policy asks of a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// A domain's MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// The exchangers' name patterns, lowercased: a name, or `*.` and a name for exactly one
    /// more label.
    mx: Vec<String>,
    max_age: Duration,
}

/// The longest a policy is kept, whatever it says (RFC 8461 section 3.2: about a year).
const MAX_AGE_LIMIT: u64 = 31_557_600;

/// Past this many cached policies, the expired ones are dropped (each is otherwise dropped
/// when its domain is next looked at).
const CACHED_POLICIES: usize = 10_000;

/// A policy file larger than this is refused (RFC 8461 section 3.3 suggests 64 KiB).
const POLICY_SIZE_LIMIT: usize = 64 * 1024;

impl Policy {
    /// The policy in the text of a `mta-sts.txt` (`key: value` lines), or what is wrong with
    /// it.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_owned()),
                "mode" => mode = Some(value.to_owned()),
                "max_age" => max_age = Some(value.to_owned()),
                "mx" => mx.push(value.to_ascii_lowercase()),
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("it has no `version: STSv1` line".into());
        }
        let mode = match mode.as_deref() {
            Some("enforce") => Mode::Enforce,
            Some("testing") => Mode::Testing,
            Some("none") => Mode::None,
            Some(other) => {
                return Err(format!(
                    "its mode `{other}` is not enforce, testing or none"
                ))
            }
            None => return Err("it has no `mode` line".into()),
        };
        let max_age = match max_age.as_deref().map(str::parse::<u64>) {
            Some(Ok(seconds)) => Duration::from_secs(seconds.min(MAX_AGE_LIMIT)),
            Some(Err(_)) => return Err("its max_age is not a number of seconds".into()),
            None => return Err("it has no `max_age` line".into()),
        };
        if mx.is_empty() && mode != Mode::None {
            return Err("it names no `mx`".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether `exchanger` matches one of the policy's `mx` patterns (RFC 8461 section 4.1).
    pub fn allows(&self, exchanger: &str) -> bool {
        let name = exchanger.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == name,
            })
    }

    /// The `mx` patterns, for messages.
    pub fn patterns(&self) -> String {
        self.mx.join(", ")
    }
}

/// The `id` of a domain's announcement among its `_mta-sts` TXT records: `Ok(None)` when
/// none announces a policy, an error when the announcement is not usable (two of them, or
/// no `id`), which counts as no announcement.
fn announced_id(records: &[String]) -> Result<Option<String>, String> {
    let announcements: Vec<&String> = records
        .iter()
        .filter(|record| {
            record.strip_prefix("v=STSv1").is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.is_empty() || rest.starts_with(';')
            })
        })
        .collect();
    let record = match announcements[..] {
        [] => return Ok(None),
        [record] => record,
        _ => return Err("more than one `v=STSv1` record".into()),
    };
    record
        .split(';')
        .filter_map(|field| field.trim().split_once('='))
        .find(|(key, _)| key.trim() == "id")
        .map(|(_, id)| id.trim())
        .filter(|id| {
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .map(|id| Some(id.to_owned()))
        .ok_or_else(|| format!("`{record}` has no valid id"))
}

/// A policy fetched, with the announcement it was fetched for.
struct Cached {
    id: String,
    policy: Policy,
    expires: Instant,
    /// When it is fetched again (half its `max_age`), the cached one holding meanwhile.
    refresh: Instant,
}

/// How long a failed fetch is not tried again for the same announcement: a domain whose
/// policy server is down would otherwise cost every new connection to it a wait.
const FETCH_RETRY: Duration = Duration::from_secs(300);

/// The longest a policy fetch waits at each step (the DNS, connecting, each read), whatever
/// the transport's `timeout_secs`: the mail waits meanwhile.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a whole fetch may take (a server may send a byte every few seconds).
const FETCH_DEADLINE: Duration = Duration::from_secs(30);

/// What is known of the domains' policies: those fetched, and the fetches that failed (by
/// domain: the id, and when to try again).
#[derive(Default)]
struct Known {
    cache: HashMap<String, Cached>,
    failed: HashMap<String, (String, Instant)>,
    /// The domains whose `_mta-sts` record got no answer (a timeout, a server failure), and
    /// when to ask again.
    unanswered: HashMap<String, Instant>,
}

/// What [`Known`] says of a domain's announcement.
enum Lookup {
    /// This policy holds (or none does), without a fetch.
    Settled(Option<Policy>),
    /// Fetch it; until then (and if that fails), this one holds.
    Fetch(Option<Policy>),
}

impl Known {
    /// Whether `domain`'s record went unanswered lately (it is not asked again until then).
    fn unanswered(&mut self, domain: &str, now: Instant) -> bool {
        match self.unanswered.get(domain) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.unanswered.remove(domain);
                false
            }
            None => false,
        }
    }

    /// `domain`'s record got no answer at `now`.
    fn not_answered(&mut self, domain: &str, now: Instant) {
        if self.unanswered.len() >= CACHED_POLICIES {
            self.unanswered.retain(|_, until| *until > now);
        }
        self.unanswered.insert(domain.to_owned(), now + FETCH_RETRY);
    }

    /// What holds for `domain` at `now`, its record announcing `id` (or nothing). A policy
    /// past half its `max_age` is fetched again while it still holds, so that it does not
    /// lapse when a fetch fails at the moment it expires.
    fn lookup(&mut self, domain: &str, id: Option<&str>, now: Instant) -> Lookup {
        if self
            .cache
            .get(domain)
            .is_some_and(|cached| cached.expires <= now)
        {
            self.cache.remove(domain);
        }
        let cached = self.cache.get(domain);
        let policy = cached.map(|cached| cached.policy.clone());
        let Some(id) = id else {
            return Lookup::Settled(policy);
        };
        if cached.is_some_and(|cached| cached.id == id && now < cached.refresh) {
            return Lookup::Settled(policy);
        }
        let recently_failed = self
            .failed
            .get(domain)
            .is_some_and(|(failed_id, until)| failed_id == id && *until > now);
        if recently_failed {
            Lookup::Settled(policy)
        } else {
            Lookup::Fetch(policy)
        }
    }

    /// Keeps what fetching `domain`'s policy `id` gave at `now`.
    fn fetched(&mut self, domain: &str, id: &str, fetched: Result<&Policy, ()>, now: Instant) {
        match fetched {
            Ok(policy) => {
                self.failed.remove(domain);
                if self.cache.len() >= CACHED_POLICIES {
                    self.cache.retain(|_, cached| cached.expires > now);
                    // Still full of live ones: the one expiring first goes.
                    let first = self
                        .cache
                        .iter()
                        .min_by_key(|(_, cached)| cached.expires)
                        .map(|(domain, _)| domain.clone());
                    if let Some(first) = first.filter(|_| self.cache.len() >= CACHED_POLICIES) {
                        self.cache.remove(&first);
                    }
                }
                self.cache.insert(
                    domain.to_owned(),
                    Cached {
                        id: id.to_owned(),
                        policy: policy.clone(),
                        expires: now + policy.max_age,
                        refresh: now + policy.max_age / 2,
                    },
                );
            }
            Err(()) => {
                if self.failed.len() >= CACHED_POLICIES {
                    self.failed.retain(|_, (_, until)| *until > now);
                }
                self.failed
                    .insert(domain.to_owned(), (id.to_owned(), now + FETCH_RETRY));
            }
        }
    }
}

/// The policies of the domains mail went to, shared by the transport's instances with the
/// same settings, and how to fetch more.
pub struct Policies {
    known: Mutex<Known>,
    /// The TLS trust for policy servers (the public roots, or `ca_file`'s).
    tls: Arc<ClientConfig>,
    /// The policy servers' port (443; another for tests).
    port: u16,
    timeout: Duration,
}

/// The policies in use, by settings (`ca_file`, the port, the timeout).
static IN_USE: InUse<(Option<String>, u16, Duration), Policies> = Mutex::new(Vec::new());

impl Policies {
    /// The policies of the instances trusting `ca_file` (or the public roots) for policy
    /// servers on `port`: the ones they share, made if none are in use.
    pub fn shared(
        ca_file: Option<&str>,
        port: u16,
        timeout: Duration,
    ) -> Result<Arc<Policies>, String> {
        let settings = (ca_file.map(str::to_owned), port, timeout);
        shared(&IN_USE, settings, || {
            Ok(Policies {
                known: Mutex::default(),
                tls: transport_support::tls::client_config(ca_file)?,
                port,
                timeout: timeout.min(FETCH_TIMEOUT),
            })
        })
    }

    /// What is known, locked (a panic while it was held left nothing half-written that
    /// matters: at worst an entry is missing).
    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the policy cached for `domain` is in force and says `enforce` (no lookup).
    pub fn enforced(&self, domain: &str) -> bool {
        self.known().cache.get(domain).is_some_and(|cached| {
            cached.expires > Instant::now() && cached.policy.mode == Mode::Enforce
        })
    }

    /// The policy that holds for `domain` now, if any; `name` is the transport's, for the log.
    /// The lock is not held during a fetch: another instance fetching the same policy at
    /// the same time does no harm.
    pub fn policy(&self, name: &str, domain: &str, directory: &Directory) -> Option<Policy> {
        let unanswered = self.known().unanswered(domain, Instant::now());
        let id = if unanswered {
            None
        } else {
            match directory.txt(&format!("_mta-sts.{domain}."), self.timeout) {
                Ok(records) => announced_id(&records).unwrap_or_else(|why| {
                    log::warn!("{name}: the MTA-STS record of {domain} is not usable: {why}");
                    None
                }),
                Err(why) => {
                    log::info!(
                        "{name}: {why}; going by the MTA-STS policy cached for {domain}, if any, and asking again in {} s",
                        FETCH_RETRY.as_secs()
                    );
                    self.known().not_answered(domain, Instant::now());
                    None
                }
            }
        };
        let cached = match self.known().lookup(domain, id.as_deref(), Instant::now()) {
            Lookup::Settled(policy) => return policy,
            Lookup::Fetch(cached) => cached,
        };
        let id = id.expect("a fetch is for an announced id");
        let fetched = self.fetch(domain, directory);
        self.known().fetched(
            domain,
            &id,
            fetched.as_ref().map_err(|_| ()),
            Instant::now(),
        );
        match fetched {
            Ok(policy) => {
                log::info!(
                    "{name}: MTA-STS policy of {domain} (id {id}): {:?}, mx {}, kept {} s",
                    policy.mode,
                    policy.patterns(),
                    policy.max_age.as_secs()
                );
                Some(policy)
            }
            Err(why) => {
                log::warn!(
                    "{name}: cannot fetch the MTA-STS policy of {domain} (id {id}): {why}; {}, and trying again in {} s",
                    if cached.is_some() {
                        "keeping the one cached"
                    } else {
                        "delivering as without one"
                    },
                    FETCH_RETRY.as_secs()
                );
                cached
            }
        }
    }

    /// `https://mta-sts.<domain>/.well-known/mta-sts.txt`, read and parsed.
    fn fetch(&self, domain: &str, directory: &Directory) -> Result<Policy, String> {
        let host = format!("mta-sts.{domain}");
        let addresses = directory
            .addresses(&format!("{host}."), Some(self.timeout))
            .map_err(|why| format!("{host}: {why}"))?;
        let stream = addresses
            .iter()
            .find_map(|ip| {
                TcpStream::connect_timeout(&SocketAddr::new(*ip, self.port), self.timeout).ok()
            })
            .ok_or_else(|| format!("cannot connect to {host} on port {}", self.port))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| format!("{host}: {e}"))?;
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
        let connection = ClientConnection::new(Arc::clone(&self.tls), server_name)
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        let mut tls = StreamOwned::new(connection, stream);
        let request = format!(
            "GET /.well-known/mta-sts.txt HTTP/1.0\r\nHost: {host}\r\nUser-Agent: spooler-transport-smtp\r\n\r\n"
        );
        let https_error = |e: std::io::Error| {
            transport_support::tls::certificate_refusal(&host, &e)
                .unwrap_or_else(|| format!("HTTPS with {host}: {e}"))
        };
        tls.write_all(request.as_bytes()).map_err(https_error)?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 8192];
        let deadline = Instant::now() + FETCH_DEADLINE;
        let mut closed_cleanly = true;
        loop {
            match tls.read(&mut chunk) {
                Ok(0) => break,
                Ok(read) => response.extend_from_slice(&chunk[..read]),
                // Closed without TLS's close_notify: HTTP/1.0 ends at the close, but someone
                // on the path may have cut it (`policy_body` checks what it can).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    closed_cleanly = false;
                    break;
                }
                Err(e) => return Err(https_error(e)),
            }
            if response.len() > POLICY_SIZE_LIMIT + 8192 {
                return Err(format!("{host} sent more than {POLICY_SIZE_LIMIT} bytes"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{host} did not send its policy within {} s",
                    FETCH_DEADLINE.as_secs()
                ));
            }
        }
        let body =
            policy_body(&response, closed_cleanly).map_err(|why| format!("{host}: {why}"))?;
        Policy::parse(body).map_err(|why| format!("the policy from {host} is not valid: {why}"))
    }
}

/// The body of an HTTP response that must be `200` with `text/plain` (RFC 8461 section
/// 3.3: no redirects, no other media type). A response whose connection was not closed
/// cleanly (`closed_cleanly`, TLS's close_notify) must be whole: as long as its
/// Content-Length says, or without one, ending with a line end.
fn policy_body(response: &[u8], closed_cleanly: bool) -> Result<&str, String> {
    let text = std::str::from_utf8(response).map_err(|_| "the answer is not text".to_owned())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or("the answer is not HTTP")?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/") || code != "200" {
        return Err(format!("it answered `{status}`, not 200"));
    }
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if content_type.as_deref() != Some("text/plain") {
        return Err(format!(
            "its policy is `{}`, not text/plain",
            content_type.unwrap_or_default()
        ));
    }
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>());
    let whole = match length {
        Some(Ok(length)) => body.len() == length,
        Some(Err(_)) => false,
        None => closed_cleanly || body.ends_with('\n'),
    };
    if !whole {
        return Err("its answer was cut short".into());
    }
    if body.len() > POLICY_SIZE_LIMIT {
        return Err(format!(
            "its policy is larger than {POLICY_SIZE_LIMIT} bytes"
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENFORCE: &str =
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n";

    #[test]
    fn a_policy_is_read_from_its_lines() {
        let policy = Policy::parse(ENFORCE).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, Duration::from_secs(86400));
        assert_eq!(policy.patterns(), "mail.example.com, *.example.net");
        let forever =
            Policy::parse("version: STSv1\nmode: testing\nmx: a.example\nmax_age: 99999999999\n");
        assert_eq!(forever.unwrap().max_age, Duration::from_secs(MAX_AGE_LIMIT));
        for (text, why) in [
            ("mode: enforce\nmx: a\nmax_age: 1\n", "STSv1"),
            (
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "strict",
            ),
            ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no `mx`"),
            (
                "version: STSv1\nmode: enforce\nmx: a\nmax_age: soon\n",
                "max_age",
            ),
        ] {
            let error = Policy::parse(text).unwrap_err();
            assert!(error.contains(why), "{text:?}: {error}");
        }
        assert!(Policy::parse("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
    }

    #[test]
    fn exchangers_match_names_and_one_label_wildcards() {
        let policy = Policy::parse(ENFORCE).unwrap();
        assert!(policy.allows("mail.example.com"));
        assert!(policy.allows("MAIL.Example.com."));
        assert!(policy.allows("mx1.example.net"));
        assert!(!policy.allows("example.net"), "a wildcard needs a label");
        assert!(!policy.allows("a.b.example.net"), "and only one");
        assert!(!policy.allows("mail.example.org"));
    }

    #[test]
    fn the_announcement_gives_the_id_once() {
        let txt = |records: &[&str]| {
            announced_id(&records.iter().map(|r| r.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            txt(&["v=STSv1; id=20261208T01;"]),
            Ok(Some("20261208T01".into()))
        );
        assert_eq!(txt(&["v=spf1 -all"]), Ok(None));
        assert!(txt(&["v=STSv1; id=1;", "v=STSv1; id=2;"]).is_err());
        assert!(txt(&["v=STSv1;"]).is_err());
        assert!(txt(&["v=STSv1; id=not-alnum;"]).is_err());
        assert_eq!(txt(&["v=STSv10; id=1;"]), Ok(None), "another version");
    }

    #[test]
    fn the_cache_follows_the_announced_id_and_outlives_a_missing_record_until_max_age() {
        let policy = Policy::parse(ENFORCE).unwrap();
        let mut known = Known::default();
        let t0 = Instant::now();
        let settled = |lookup: Lookup| match lookup {
            Lookup::Settled(policy) => Some(policy),
            Lookup::Fetch(_) => None,
        };
        assert_eq!(settled(known.lookup("a.test", None, t0)), Some(None));
        assert!(matches!(
            known.lookup("a.test", Some("1"), t0),
            Lookup::Fetch(None)
        ));
        known.fetched("a.test", "1", Ok(&policy), t0);
        let same = settled(known.lookup("a.test", Some("1"), t0));
        assert_eq!(same, Some(Some(policy.clone())), "the same id: cached");
        let stripped = settled(known.lookup("a.test", None, t0));
        assert_eq!(
            stripped,
            Some(Some(policy.clone())),
            "no record: still cached"
        );
        assert!(
            matches!(
                known.lookup("a.test", Some("2"), t0),
                Lookup::Fetch(Some(_))
            ),
            "a new id is fetched, the cached one holding meanwhile"
        );
        known.fetched("a.test", "2", Err(()), t0);
        let after_failure = settled(known.lookup("a.test", Some("2"), t0));
        assert_eq!(
            after_failure,
            Some(Some(policy.clone())),
            "not fetched again at once"
        );
        let later = t0 + FETCH_RETRY + Duration::from_secs(1);
        assert!(matches!(
            known.lookup("a.test", Some("2"), later),
            Lookup::Fetch(_)
        ));
        let aging = t0 + policy.max_age * 3 / 5;
        assert!(
            matches!(known.lookup("b.test", Some("1"), t0), Lookup::Fetch(None)),
            "another domain is apart"
        );
        known.fetched("b.test", "1", Ok(&policy), t0);
        assert!(
            matches!(
                known.lookup("b.test", Some("1"), aging),
                Lookup::Fetch(Some(_))
            ),
            "past half its max_age the same id is fetched again, the cached one holding"
        );
        let expired = t0 + policy.max_age + Duration::from_secs(1);
        assert_eq!(settled(known.lookup("a.test", None, expired)), Some(None));
    }

    #[test]
    fn only_a_200_text_plain_answer_is_a_policy() {
        let ok =
            b"HTTP/1.0 200 ok\r\nContent-type: text/plain; charset=utf-8\r\n\r\nversion: STSv1\r\n";
        assert_eq!(policy_body(ok, true), Ok("version: STSv1\r\n"));
        let cut =
            b"HTTP/1.0 200 ok\r\nContent-Type: text/plain\r\n\r\nversion: STSv1\r\nmax_age: 3";
        assert!(policy_body(cut, false).unwrap_err().contains("cut short"));
        let counted =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 99\r\n\r\nmode: x\n";
        assert!(policy_body(counted, true)
            .unwrap_err()
            .contains("cut short"));
        let moved = b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\n\r\n";
        assert!(policy_body(moved, true).unwrap_err().contains("301"));
        let html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>";
        assert!(policy_body(html, true).unwrap_err().contains("text/html"));
    }
}
