//! What each client of the SMTP listeners has done lately, host-wide: its sessions open, its
//! new connections and messages this minute, and its failed authentications (Postfix's anvil);
//! when its next AUTH answer may go (Dovecot's auth penalty); and the bans (Stalwart's
//! fail2ban), kept in the data folder's `smtp-bans` so that they outlast a restart.
//!
//! A client is an address, and an IPv6 client its /64: one subscriber usually holds a whole
//! /64, and counting its addresses one by one would give a guesser 2^64 fresh starts. The
//! counts live in one map behind one lock, touched once per connection, message or AUTH
//! answer; the map is bounded, and clients with nothing left to count are forgotten when it
//! fills.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use provider_abi::Timestamp;

use crate::config::listener::ClientLimits;
use crate::observe::metrics::metrics;
use crate::protocol::BanView;

/// The window the rates are counted over.
const MINUTE: Duration = Duration::from_secs(60);

/// The most clients counted at once: about 200 bytes each.
const MAX_CLIENTS: usize = 100_000;

/// The most user names remembered per client, for the ban's log line.
const MAX_USERS_KEPT: usize = 10;

/// The first delay of an AUTH answer after a failure; it doubles with each failure.
const FIRST_PENALTY: Duration = Duration::from_secs(1);

/// A client, as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    /// An IPv4 address (or an IPv4-mapped IPv6 one).
    V4(Ipv4Addr),
    /// An IPv6 /64, by its first 64 bits.
    V6(u64),
}

impl Client {
    /// The client `address` counts as.
    pub fn of(address: IpAddr) -> Client {
        match address {
            IpAddr::V4(v4) => Client::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(v4),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::V4(v4) => write!(f, "{v4}"),
            Client::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64)),
        }
    }
}

impl std::str::FromStr for Client {
    type Err = String;

    /// An address, or an IPv6 /64 as [`Client`] shows it.
    fn from_str(text: &str) -> Result<Client, String> {
        let address = text.strip_suffix("/64").unwrap_or(text);
        address
            .parse::<IpAddr>()
            .map(Client::of)
            .map_err(|_| format!("`{text}` is not an address, e.g. 192.0.2.7 or 2001:db8:1:2::/64"))
    }
}

/// Why a connection is refused before its session starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The client is banned after failed authentications.
    Banned,
    /// The client has its most sessions open.
    Sessions,
    /// The client opened its most connections this minute.
    Connections,
}

impl Refused {
    /// The limit's name in the metrics.
    fn limit(&self) -> &'static str {
        match self {
            Refused::Banned => "banned",
            Refused::Sessions => "sessions",
            Refused::Connections => "connection_rate",
        }
    }

    /// The `421` line a refused client reads.
    pub fn reply(&self, hostname: &str, client: Client) -> String {
        let why = match self {
            Refused::Banned => format!("{client} is banned after failed authentications"),
            Refused::Sessions => "too many sessions from your address".to_owned(),
            Refused::Connections => "too many connections from your address".to_owned(),
        };
        format!("421 4.7.0 {hostname} {why}, try again later\r\n")
    }
}

/// When an AUTH answer may be given, and whether the client is banned by it.
pub struct AuthVerdict {
    /// Not before this.
    pub answer_at: Instant,
    /// For how long the client is banned from now, if this answer banned it.
    pub banned_for: Option<Duration>,
}

/// A session's place in its client's count, given back when the session ends.
pub struct Lease {
    clients: Arc<Clients>,
    client: Client,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(record) = self.clients.table.lock().clients.get_mut(&self.client) {
            record.sessions = record.sessions.saturating_sub(1);
        }
    }
}

/// The counts and bans of every client of the host's listeners.
pub struct Clients {
    table: Mutex<Table>,
    /// Where the bans are kept.
    bans_file: PathBuf,
}

struct Table {
    clients: HashMap<Client, Record>,
    bans: BTreeMap<Client, BanView>,
    /// When the map was last cleared of clients with nothing to count.
    last_pruned: Option<Instant>,
}

/// What one client did lately.
struct Record {
    sessions: usize,
    /// When its last refusal for sessions was logged.
    sessions_logged: Option<Instant>,
    connections: Window,
    messages: Window,
    /// Failed authentications, since the first one less than a ban time before the last.
    failures: u32,
    last_failure: Option<Instant>,
    /// The user names of the failures, for the ban's log line.
    users: Vec<String>,
    /// When its next AUTH answer may go at the earliest: answers from one client are
    /// spaced out however many sessions it opens.
    next_answer: Instant,
    /// Until when there is something to remember about it.
    keep_until: Instant,
}

/// Events counted over a one-minute window from the first of them.
#[derive(Default)]
struct Window {
    started: Option<Instant>,
    count: u32,
    /// Whether a refusal was logged in this window.
    logged: bool,
}

/// Whether an event went over a limit, and whether to log it.
enum Counted {
    Within,
    Over { log: bool },
}

impl Window {
    /// Counts an event at `now` against at most `limit` a minute.
    fn count(&mut self, now: Instant, limit: Option<u32>) -> Counted {
        let Some(limit) = limit else {
            return Counted::Within;
        };
        if self.started.is_none_or(|started| now >= started + MINUTE) {
            *self = Window {
                started: Some(now),
                ..Window::default()
            };
        }
        self.count = self.count.saturating_add(1);
        if self.count <= limit {
            return Counted::Within;
        }
        let log = !self.logged;
        self.logged = true;
        Counted::Over { log }
    }
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            sessions: 0,
            sessions_logged: None,
            connections: Window::default(),
            messages: Window::default(),
            failures: 0,
            last_failure: None,
            users: Vec::new(),
            next_answer: now,
            keep_until: now + MINUTE,
        }
    }
}

impl Clients {
    /// The counts, empty, and the bans kept in `data_dir` (the expired ones dropped). A line
    /// of the file that cannot be read is logged and dropped; a file that cannot be read at
    /// all stops the start, naming it.
    pub fn open(data_dir: &Path) -> Result<Arc<Clients>, String> {
        let bans_file = data_dir.join("smtp-bans");
        let text = match fs::read_to_string(&bans_file) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", bans_file.display())),
        };
        let now = Timestamp::now().0;
        let mut bans = BTreeMap::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let ban = serde_json::from_str::<BanView>(line)
                .map_err(|e| e.to_string())
                .and_then(|ban| Ok((ban.address.parse::<Client>()?, ban)));
            match ban {
                Ok((client, ban)) if ban.until > now => {
                    bans.insert(client, ban);
                }
                Ok(_) => {}
                Err(why) => log::warn!("{}: dropped `{line}`: {why}", bans_file.display()),
            }
        }
        if !bans.is_empty() {
            log::info!(
                "listener: {} client(s) banned, from {}",
                bans.len(),
                bans_file.display()
            );
        }
        Ok(Arc::new(Clients {
            table: Mutex::new(Table {
                clients: HashMap::new(),
                bans,
                last_pruned: None,
            }),
            bans_file,
        }))
    }

    /// Counts a new connection from `address`: a lease on one of its sessions, or why not.
    /// The first refusal of a kind in a minute is logged, naming `listener`.
    pub fn admit(
        self: &Arc<Self>,
        address: IpAddr,
        limits: &ClientLimits,
        listener: SocketAddr,
    ) -> Result<Option<Lease>, Refused> {
        let admitted = self.count_connection(address, limits, listener);
        if let Err(refused) = &admitted {
            metrics().client_refused(refused.limit());
        }
        admitted
    }

    fn count_connection(
        self: &Arc<Self>,
        address: IpAddr,
        limits: &ClientLimits,
        listener: SocketAddr,
    ) -> Result<Option<Lease>, Refused> {
        if !limits.apply_to(address) {
            return Ok(None);
        }
        let client = Client::of(address);
        let now = Instant::now();
        let mut table = self.table.lock();
        if table.banned(client) {
            return Err(Refused::Banned);
        }
        let record = table.record(client, now);
        if let Counted::Over { log } = record.connections.count(now, limits.connection_rate) {
            if log {
                log::warn!(
                    "listener {listener}: refused {client}: more than {} connections a minute; \
                     further refusals this minute are not logged",
                    limits.connection_rate.unwrap_or_default()
                );
            }
            return Err(Refused::Connections);
        }
        if record.sessions >= limits.max_sessions {
            if record
                .sessions_logged
                .is_none_or(|logged| now >= logged + MINUTE)
            {
                record.sessions_logged = Some(now);
                log::warn!(
                    "listener {listener}: refused {client}: {} sessions open already; further \
                     refusals this minute are not logged",
                    record.sessions
                );
            }
            return Err(Refused::Sessions);
        }
        record.sessions += 1;
        record.keep_until = record.keep_until.max(now + MINUTE);
        Ok(Some(Lease {
            clients: Arc::clone(self),
            client,
        }))
    }

    /// Counts a message from `address`: false if it is over its rate (logged once a minute).
    pub fn message(&self, address: IpAddr, limits: &ClientLimits) -> bool {
        if !limits.apply_to(address) {
            return true;
        }
        let client = Client::of(address);
        let now = Instant::now();
        let mut table = self.table.lock();
        let record = table.record(client, now);
        record.keep_until = record.keep_until.max(now + MINUTE);
        match record.messages.count(now, limits.message_rate) {
            Counted::Within => true,
            Counted::Over { log } => {
                metrics().client_refused("message_rate");
                if log {
                    log::warn!(
                        "listener: refused mail from {client}: more than {} messages a minute; \
                         further refusals this minute are not logged",
                        limits.message_rate.unwrap_or_default()
                    );
                }
                false
            }
        }
    }

    /// Whether `address` is banned now.
    pub fn is_banned(&self, address: IpAddr, limits: &ClientLimits) -> bool {
        limits.apply_to(address) && self.table.lock().banned(Client::of(address))
    }

    /// Counts an AUTH answer to `address` for `user`, which `succeeded` or not: when it may
    /// be given, and whether it bans the client. After a failure, the client's answers are
    /// spaced by a delay that doubles from 1 s with each failure, up to `auth_penalty`; a
    /// success does not reset the failures (a guesser holding one account could interleave
    /// logins otherwise), time does: they are forgotten a ban time after the last.
    pub fn auth_answer(
        &self,
        address: IpAddr,
        limits: &ClientLimits,
        user: &str,
        succeeded: bool,
    ) -> AuthVerdict {
        let client = Client::of(address);
        let now = Instant::now();
        let mut table = self.table.lock();
        let record = table.record(client, now);
        if record
            .last_failure
            .is_some_and(|last| now >= last + limits.auth_ban_time)
        {
            record.failures = 0;
            record.users.clear();
        }
        let answer_at = record.next_answer.max(now) + penalty(record.failures, limits.auth_penalty);
        record.next_answer = answer_at;
        record.keep_until = record.keep_until.max(answer_at + MINUTE);
        if succeeded {
            return AuthVerdict {
                answer_at,
                banned_for: None,
            };
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = Some(now);
        record.keep_until = record.keep_until.max(now + limits.auth_ban_time);
        if !record.users.iter().any(|u| u == user) && record.users.len() < MAX_USERS_KEPT {
            record.users.push(user.chars().take(64).collect());
        }
        let failures = record.failures;
        let ban_now = limits.auth_ban_after.is_some_and(|after| failures >= after)
            && limits.apply_to(address);
        if !ban_now {
            return AuthVerdict {
                answer_at,
                banned_for: None,
            };
        }
        let users = std::mem::take(&mut record.users);
        record.failures = 0;
        let until = Timestamp::now().0 + limits.auth_ban_time.as_millis() as i64;
        log::warn!(
            "listener: banned {client} for {:?} after {failures} failed authentications \
             (users tried: {})",
            limits.auth_ban_time,
            users.join(", ")
        );
        table.bans.insert(
            client,
            BanView {
                address: client.to_string(),
                until,
                failures,
                users,
            },
        );
        self.save(&table);
        metrics().clients_banned.inc();
        AuthVerdict {
            answer_at,
            banned_for: Some(limits.auth_ban_time),
        }
    }

    /// The bans in force.
    pub fn bans(&self) -> Vec<BanView> {
        let mut table = self.table.lock();
        let now = Timestamp::now().0;
        table.bans.retain(|_, ban| ban.until > now);
        table.bans.values().cloned().collect()
    }

    /// Lifts the ban on `client`, and forgets its failures; false if it was not banned.
    pub fn unban(&self, client: Client) -> bool {
        let mut table = self.table.lock();
        if !table.banned(client) {
            return false;
        }
        table.bans.remove(&client);
        if let Some(record) = table.clients.get_mut(&client) {
            record.failures = 0;
            record.users.clear();
            record.next_answer = Instant::now();
        }
        self.save(&table);
        log::info!("listener: lifted the ban on {client}");
        true
    }

    /// Writes the bans anew (a new file renamed over the old, so that a crash leaves one or
    /// the other whole). A failure is logged: the bans hold until the host stops.
    fn save(&self, table: &Table) {
        let mut text = String::new();
        for ban in table.bans.values() {
            text += &serde_json::to_string(ban).expect("a ban serializes");
            text.push('\n');
        }
        let fresh = self.bans_file.with_extension("new");
        let written = fs::File::create(&fresh)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&fresh, &self.bans_file));
        if let Err(error) = written {
            log::error!(
                "cannot write the bans to {}: {error}; they hold until the host stops",
                self.bans_file.display()
            );
        }
    }
}

impl Table {
    /// Whether `client` is banned now (an expired ban is dropped).
    fn banned(&mut self, client: Client) -> bool {
        match self.bans.get(&client) {
            Some(ban) if ban.until > Timestamp::now().0 => true,
            Some(_) => {
                self.bans.remove(&client);
                false
            }
            None => false,
        }
    }

    /// `client`'s record, new if it had none. When the map is full, clients with nothing
    /// left to remember are forgotten first (at most once a second: it is a walk over the
    /// map); if it is still full, the new client is counted in a record of its own that is
    /// not kept, so the limits of one session still hold.
    fn record(&mut self, client: Client, now: Instant) -> &mut Record {
        if self.clients.len() >= MAX_CLIENTS && !self.clients.contains_key(&client) {
            let due = self
                .last_pruned
                .is_none_or(|last| now >= last + Duration::from_secs(1));
            if due {
                self.last_pruned = Some(now);
                self.clients
                    .retain(|_, record| record.sessions > 0 || record.keep_until > now);
                if self.clients.len() >= MAX_CLIENTS {
                    log::warn!(
                        "listener: {MAX_CLIENTS} clients counted at once; the oldest are kept"
                    );
                }
            }
            if self.clients.len() >= MAX_CLIENTS {
                // Evict one client with no session, so the map stays bounded.
                let evicted = self
                    .clients
                    .iter()
                    .find(|(_, record)| record.sessions == 0)
                    .map(|(client, _)| *client);
                if let Some(evicted) = evicted {
                    self.clients.remove(&evicted);
                }
            }
        }
        self.clients
            .entry(client)
            .or_insert_with(|| Record::new(now))
    }
}

/// The delay of the answer after `failures` failures: none, then 1 s doubling up to `cap`.
fn penalty(failures: u32, cap: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doubled = FIRST_PENALTY.saturating_mul(1 << (failures - 1).min(16));
    doubled.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::network::Network;

    fn limits() -> ClientLimits {
        ClientLimits {
            max_sessions: 2,
            connection_rate: Some(3),
            message_rate: Some(2),
            auth_penalty: Duration::from_secs(15),
            auth_ban_after: Some(4),
            auth_ban_time: Duration::from_secs(3600),
            exempt: vec!["10.0.0.0/8".parse::<Network>().unwrap()],
        }
    }

    fn listener() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 25))
    }

    fn clients() -> (tempfile::TempDir, Arc<Clients>) {
        let folder = tempfile::tempdir().unwrap();
        let clients = Clients::open(folder.path()).unwrap();
        (folder, clients)
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a = Client::of("2001:db8:1:2::1".parse().unwrap());
        let b = Client::of("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!("2001:db8:1:2::/64".parse::<Client>().unwrap(), a);
        assert_eq!(
            Client::of("::ffff:192.0.2.1".parse().unwrap()).to_string(),
            "192.0.2.1"
        );
        assert!("example.com".parse::<Client>().is_err());
    }

    #[test]
    fn sessions_and_connections_are_limited_per_client_and_exempt_clients_are_not() {
        let (_folder, clients) = clients();
        let limits = limits();
        let one = "192.0.2.1".parse().unwrap();
        let first = clients.admit(one, &limits, listener()).unwrap();
        let _second = clients.admit(one, &limits, listener()).unwrap();
        assert_eq!(
            clients.admit(one, &limits, listener()).err(),
            Some(Refused::Sessions)
        );
        assert!(clients
            .admit("192.0.2.2".parse().unwrap(), &limits, listener())
            .is_ok());
        drop(first);
        // A session ended, but this is the fourth connection in the minute.
        assert_eq!(
            clients.admit(one, &limits, listener()).err(),
            Some(Refused::Connections)
        );
        for _ in 0..10 {
            assert!(clients
                .admit("10.1.1.1".parse().unwrap(), &limits, listener())
                .unwrap()
                .is_none());
        }
        assert!(clients.message(one, &limits));
        assert!(clients.message(one, &limits));
        assert!(!clients.message(one, &limits));
    }

    #[test]
    fn auth_answers_are_spaced_after_failures_and_a_ban_outlasts_a_restart() {
        let folder = tempfile::tempdir().unwrap();
        let clients = Clients::open(folder.path()).unwrap();
        let limits = limits();
        let guesser: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        let first = clients.auth_answer(guesser, &limits, "alice", false);
        assert!(first.answer_at <= Instant::now());
        let second = clients.auth_answer(guesser, &limits, "bob", false);
        assert!(second.answer_at >= start + Duration::from_secs(1));
        let third = clients.auth_answer(guesser, &limits, "alice", true);
        assert!(third.answer_at >= second.answer_at + Duration::from_secs(2));
        // Another client is not slowed down by the guesser.
        let other = clients.auth_answer("192.0.2.2".parse().unwrap(), &limits, "carol", true);
        assert!(other.answer_at <= Instant::now());
        assert!(clients
            .auth_answer(guesser, &limits, "dave", false)
            .banned_for
            .is_none());
        let fourth = clients.auth_answer(guesser, &limits, "erin", false);
        assert_eq!(fourth.banned_for, Some(limits.auth_ban_time));
        assert!(clients.is_banned(guesser, &limits));
        assert_eq!(
            clients.admit(guesser, &limits, listener()).err(),
            Some(Refused::Banned)
        );
        drop(clients);

        let clients = Clients::open(folder.path()).unwrap();
        let bans = clients.bans();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].address, "192.0.2.1");
        assert_eq!(bans[0].failures, 4);
        assert_eq!(bans[0].users, ["alice", "bob", "dave", "erin"]);
        assert!(!clients.unban(Client::of("192.0.2.2".parse().unwrap())));
        assert!(clients.unban(Client::of(guesser)));
        assert!(clients.admit(guesser, &limits, listener()).is_ok());
        let clients = Clients::open(folder.path()).unwrap();
        assert!(clients.bans().is_empty());
    }

    #[test]
    fn the_penalty_doubles_up_to_its_cap() {
        let cap = Duration::from_secs(15);
        let delays: Vec<u64> = (0..7).map(|f| penalty(f, cap).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 15, 15]);
        assert_eq!(penalty(40, cap), cap);
        assert_eq!(penalty(3, Duration::ZERO), Duration::ZERO);
    }
}
