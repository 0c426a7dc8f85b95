//! The SMTP transport: outbound mail to one smart host, or to each recipient domain's mail
//! exchangers, on `lettre`'s SMTP client.
//!
//! Each message is one SMTP transaction per server with all of its recipients there (the
//! host gives Bcc recipients transactions of their own), and every recipient gets its own
//! answer from the server's replies:
//! - a 2xx to RCPT and then to the end of DATA: delivered, with the server's words;
//! - a 5xx: failed, with the enhanced status code and the server's text, for the report;
//! - a 4xx, a refused or timed-out connection, a 4xx greeting or a 421: deferred, so the
//!   host keeps the message and tries again (store and forward).
//!
//! Connections stay open between messages (`session`); for parallel connections, give the
//! transport `parallel = N` in the profile. With `domains = [...]` it takes only recipients
//! in those domains and answers "not mine" for the others, which the host offers to the
//! next transport (a transport map).
//!
//! **To a smart host** (`mode = "smarthost"`, the default):
//!
//! ```toml
//! [[transport]]
//! provider = "smtp"
//! parallel = 4
//! config = { host = "smtp.example.com", port = 587, tls = "starttls", username = "spooler", password_file = "/etc/spooler/smtp-password" }
//! ```
//!
//! TLS (`tls = "starttls"`, the default, or `"implicit"`) always verifies the server's
//! certificate: it must chain to a trusted CA and be issued for `host`. The trusted CAs are
//! the public ones (Mozilla's list, built in) or, with `ca_file = "/path/ca.pem"`, instead
//! exactly the CA certificates in that PEM file (for a private or self-signed CA). A
//! certificate that is not trusted, or not issued for `host`, is refused: the message is
//! deferred, and its answer and the log say so and what to set.
//! `accept_invalid_certificates = true` turns verification off (only for testing).
//!
//! The AUTH password is `password`, or what the file `password_file` holds
//! (its trailing line end dropped), so that it need not stand in the profile.
//!
//! A smart host that cannot be connected to at all takes the transport offline, and a probe
//! brings it back online as soon as it listens again (`reachability`).
//!
//! **To the mail exchangers** (`mode = "mx"`): each recipient domain's MX hosts (`mx`), in
//! preference order, on port `mx_port` (25), with opportunistic STARTTLS. The recipients of
//! one message in one domain go in one transaction. An exchanger that cannot be connected
//! to, or refuses the greeting or TLS, passes the recipients to the next one; when none
//! answers, they are deferred. A domain with a null MX fails at once (5.1.10). The transport
//! never goes offline as a whole: one domain's trouble is that domain's. A domain's MTA-STS
//! policy (`mta_sts`) is followed: under `enforce`, only its named exchangers, over TLS that
//! verifies (against the public roots, or `ca_file`'s CAs).
//!
//! ```toml
//! [[transport]]
//! provider = "smtp"
//! config = { mode = "mx", helo = "mail.example.com" }
//! ```

mod data;
mod mta_sts;
mod mx;
mod reachability;
mod session;
mod shared;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use mta_sts::{Mode as StsMode, Policies, Policy};
use provider_abi::{
    export_library, Address, Library, MessageRef, OpenContext, ProviderError, RecipientOutcome,
    Transport,
};
use reachability::Reachability;
use serde::Deserialize;
use session::{explain, Client, Security, Session, Unreached};

/// Where the mail goes.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// All of it to `host`.
    Smarthost,
    /// Each domain's to its mail exchangers.
    Mx,
}

/// How the connection to a smart host is protected.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    /// Plain text (only for a smart host on this machine or a trusted network).
    None,
    /// Plain text, upgraded with STARTTLS before anything else is said.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `smarthost` (default) or `mx`.
    #[serde(default = "default_mode")]
    mode: Mode,
    /// The smart host.
    host: Option<String>,
    /// Its port [default: 465 with implicit TLS, otherwise 25].
    port: Option<u16>,
    /// `starttls` (default), `implicit` or `none`.
    tls: Option<TlsMode>,
    /// Accept a certificate that does not verify (a test server's).
    #[serde(default)]
    accept_invalid_certificates: bool,
    /// A PEM file of the CA certificates to trust instead of the built-in public roots (in
    /// MX mode: for MTA-STS, its policy servers and the exchangers it requires TLS with).
    ca_file: Option<String>,
    /// AUTH user name; with `password` or `password_file`.
    username: Option<String>,
    /// AUTH password.
    password: Option<String>,
    /// A file holding the AUTH password (its trailing line end dropped).
    password_file: Option<String>,
    /// MX mode: the DNS server to ask (`IP` or `IP:port`) [default: the system's].
    resolver: Option<String>,
    /// MX mode: the port of the mail exchangers [default: 25].
    mx_port: Option<u16>,
    /// MX mode: follow the domains' MTA-STS policies [default: true].
    mta_sts: Option<bool>,
    /// MX mode: the port of the MTA-STS policy servers [default: 443].
    mta_sts_port: Option<u16>,
    /// The name given in EHLO, and the domain of `LOCAL:` senders [default: this host's name].
    helo: Option<String>,
    /// How long to wait for the server at each step, in seconds.
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    /// The address types it claims.
    #[serde(default = "default_types")]
    address_types: Vec<String>,
    /// Only recipients in these domains (like a Postfix transport map); for the others it
    /// answers "not mine" and the host offers them to the next transport.
    domains: Option<Vec<String>>,
}

fn default_mode() -> Mode {
    Mode::Smarthost
}

fn default_timeout() -> u64 {
    60
}

fn default_types() -> Vec<String> {
    vec!["SMTP".into()]
}

/// How many idle connections an instance keeps in MX mode, each to one domain; past that,
/// the one idle longest is closed. Few, because every `parallel` instance keeps its own and
/// a receiving server counts them all against one client (smtp-sink takes 256 in all;
/// Postfix's `smtpd_client_connection_count_limit` is 50).
const OPEN_DESTINATIONS: usize = 4;

/// How long an idle connection to an exchanger is kept for the domain's next message, as
/// Postfix's `smtp_connection_cache_time_limit`: long enough for a burst to one domain to
/// share it, short enough not to sit on the server's connection slots.
const IDLE_LIMIT: Duration = Duration::from_secs(2);

/// Where the transport sends its mail, and the connections it keeps for that.
enum Route {
    /// Everything to one server.
    Smarthost(Box<Session>),
    /// Each domain to its exchangers.
    Mx(Box<Exchangers>),
}

/// MX delivery: the DNS, the exchangers' port, the domains' TLS policies, and one open
/// session per domain.
struct Exchangers {
    /// Shared with the transport's other instances.
    directory: Arc<mx::Directory>,
    port: u16,
    sessions: HashMap<String, Session>,
    /// The MTA-STS policies fetched (shared with the other instances); none when
    /// `mta_sts = false`.
    policies: Option<Arc<Policies>>,
    /// The CAs trusted for verified TLS (`ca_file`), instead of the public roots.
    ca_file: Option<String>,
    /// Verifying TLS parameters per exchanger name, made once (loading the roots is costly).
    verified: HashMap<String, TlsParameters>,
}

/// The transport instance: its settings and its open connections.
pub struct SmtpTransport {
    client: Client,
    helo: String,
    address_types: Vec<String>,
    domains: Option<Vec<String>>,
    route: Route,
}

impl SmtpTransport {
    /// Opens the transport from its configuration (it connects lazily, at the first message).
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        if let Some(bad_type) = config
            .address_types
            .iter()
            .find(|t| !provider_abi::address::is_address_type(t))
        {
            return Err(context.config_error(
                "address_types",
                format!("`{bad_type}` is not an address type (letters, digits, '-' or '_')"),
            ));
        }
        let helo = config
            .helo
            .clone()
            .unwrap_or_else(provider_abi::host::hostname);
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let (route, credentials) = match config.mode {
            Mode::Smarthost => smarthost(context, &config)?,
            Mode::Mx => (mx_route(context, &config, timeout)?, None),
        };
        Ok(SmtpTransport {
            client: Client {
                name: context.name().to_owned(),
                client_id: ClientId::Domain(helo.clone()),
                credentials,
                timeout,
            },
            helo,
            address_types: config
                .address_types
                .iter()
                .map(|t| t.to_ascii_uppercase())
                .collect(),
            domains: config
                .domains
                .map(|domains| domains.iter().map(|d| d.to_ascii_lowercase()).collect()),
            route,
        })
    }

    /// The envelope sender for MAIL FROM: SMTP senders as they are, `LOCAL:user` as
    /// `user@<helo>`, and the null sender for reports.
    fn mail_from(&self, message: &MessageRef<'_>) -> Option<lettre::Address> {
        let sender = &message.envelope.sender;
        if message.envelope.is_report {
            return None;
        }
        let text = if sender.has_type("SMTP") {
            sender.address().to_owned()
        } else {
            format!("{}@{}", sender.address(), self.helo)
        };
        text.parse().ok()
    }

    /// Whether the recipient's domain is one this transport serves.
    fn serves(&self, recipient: &Address) -> bool {
        let Some(domains) = &self.domains else {
            return true;
        };
        domain_of(recipient).is_some_and(|domain| domains.contains(&domain))
    }

    /// The answers for `recipients` (all this transport's), by the route configured.
    fn deliver(
        &mut self,
        message: &MessageRef<'_>,
        recipients: &[Address],
    ) -> Vec<RecipientOutcome> {
        let from = self.mail_from(message);
        match &mut self.route {
            Route::Smarthost(session) => session
                .transaction(&self.client, from, message, recipients)
                .unwrap_or_else(|Unreached { reason, .. }| {
                    vec![RecipientOutcome::deferred(reason, None); recipients.len()]
                }),
            Route::Mx(exchangers) => {
                let mut outcomes = vec![RecipientOutcome::NotMine; recipients.len()];
                for (domain, indexes) in by_domain(recipients) {
                    let Some(domain) = domain else {
                        for index in indexes {
                            outcomes[index] = RecipientOutcome::failed(
                                "5.1.3",
                                format!(
                                    "x-spooler; `{}` has no domain",
                                    recipients[index].address()
                                ),
                                "the address has no domain to deliver to",
                            );
                        }
                        continue;
                    };
                    let group: Vec<Address> =
                        indexes.iter().map(|&i| recipients[i].clone()).collect();
                    let answers =
                        exchangers.deliver(&self.client, &domain, from.clone(), message, &group);
                    for (index, answer) in indexes.into_iter().zip(answers) {
                        outcomes[index] = answer;
                    }
                }
                outcomes
            }
        }
    }
}

/// The smart-host route and its AUTH credentials, from `config`.
fn smarthost(
    context: &OpenContext,
    config: &Config,
) -> Result<(Route, Option<Credentials>), ProviderError> {
    // The helpers' words name the key themselves.
    let bad = |why: String| context.config_error("", why);
    for (key, set) in [
        ("resolver", config.resolver.is_some()),
        ("mx_port", config.mx_port.is_some()),
        ("mta_sts", config.mta_sts.is_some()),
        ("mta_sts_port", config.mta_sts_port.is_some()),
    ] {
        if set {
            return Err(
                context.config_error(key, "it is for mode = \"mx\"; set that, or remove it")
            );
        }
    }
    let Some(host) = config.host.clone() else {
        return Err(context.config_error(
            "host",
            "the smart host is missing; set host = \"smtp.example.com\", or mode = \"mx\" to deliver to each domain's mail exchangers",
        ));
    };
    let password =
        transport_support::password(config.password.clone(), config.password_file.as_deref())
            .map_err(bad)?;
    let credentials = match (config.username.clone(), password) {
        (Some(user), Some(password)) => Some(Credentials::new(user, password)),
        (None, None) => None,
        _ => {
            return Err(bad(
                "username and password (or password_file) go together".into()
            ))
        }
    };
    let tls = config.tls.unwrap_or(TlsMode::Starttls);
    let parameters = || {
        tls_parameters(
            &host,
            config.ca_file.as_deref(),
            config.accept_invalid_certificates,
        )
        .map_err(bad)
    };
    let security = match tls {
        TlsMode::None if config.ca_file.is_some() => {
            return Err(context.config_error(
                "ca_file",
                "it is for TLS, and tls = \"none\"; set tls = \"starttls\" or \"implicit\"",
            ))
        }
        TlsMode::None => Security::Plain,
        TlsMode::Starttls => Security::Starttls(parameters()?),
        TlsMode::Implicit => Security::Implicit(parameters()?),
    };
    let port = config
        .port
        .unwrap_or(if tls == TlsMode::Implicit { 465 } else { 25 });
    let reachability = Reachability::new(format!("{host}:{port}"), context.host().clone());
    let session = Session::new(host.clone(), port, format!("{host}:{port}"), security)
        .reporting_to(reachability);
    Ok((Route::Smarthost(Box::new(session)), credentials))
}

/// The MX route, from `config`.
fn mx_route(
    context: &OpenContext,
    config: &Config,
    timeout: Duration,
) -> Result<Route, ProviderError> {
    let smarthost_keys = [
        ("host", config.host.is_some()),
        ("port", config.port.is_some()),
        ("tls", config.tls.is_some()),
        (
            "accept_invalid_certificates",
            config.accept_invalid_certificates,
        ),
        ("username", config.username.is_some()),
        ("password", config.password.is_some()),
        ("password_file", config.password_file.is_some()),
    ];
    if let Some((key, _)) = smarthost_keys.iter().find(|(_, set)| *set) {
        return Err(context.config_error(
            key,
            "it is for a smart host, and mode = \"mx\" delivers to each domain's mail exchangers (with opportunistic STARTTLS); remove it",
        ));
    }
    let resolver = match &config.resolver {
        None => None,
        Some(text) => Some(parse_resolver(text).ok_or_else(|| {
            context.config_error(
                "resolver",
                format!("`{text}` is not a DNS server's address; write it as \"127.0.0.1\" or \"127.0.0.1:5353\""),
            )
        })?),
    };
    let directory = mx::Directory::shared(resolver, timeout)
        .map_err(|why| context.config_error("resolver", why))?;
    let policies = if config.mta_sts.unwrap_or(true) {
        let port = config.mta_sts_port.unwrap_or(443);
        Some(
            Policies::shared(config.ca_file.as_deref(), port, timeout)
                .map_err(|why| context.config_error("ca_file", why))?,
        )
    } else if config.ca_file.is_some() {
        return Err(context.config_error(
            "ca_file",
            "in MX mode it is the trust for MTA-STS, and mta_sts = false; remove one of them",
        ));
    } else {
        None
    };
    Ok(Route::Mx(Box::new(Exchangers {
        directory,
        port: config.mx_port.unwrap_or(25),
        sessions: HashMap::new(),
        policies,
        ca_file: config.ca_file.clone(),
        verified: HashMap::new(),
    })))
}

/// `127.0.0.1`, `127.0.0.1:5353`, `::1` or `[::1]:5353`; port 53 unless given.
fn parse_resolver(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// The lowercased domain of an address, if it has one.
fn domain_of(recipient: &Address) -> Option<String> {
    recipient
        .address()
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .filter(|domain| !domain.is_empty())
}

/// The indexes of `recipients` grouped by domain, in the order the domains first appear.
fn by_domain(recipients: &[Address]) -> Vec<(Option<String>, Vec<usize>)> {
    let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for (index, recipient) in recipients.iter().enumerate() {
        let domain = domain_of(recipient);
        match groups.iter_mut().find(|(d, _)| *d == domain) {
            Some((_, indexes)) => indexes.push(index),
            None => groups.push((domain, vec![index])),
        }
    }
    groups
}

impl Exchangers {
    /// One transaction for `recipients`, all in `domain`: on the domain's open session if it
    /// still answers, otherwise with each exchanger's addresses in turn until one is reached,
    /// as the domain's MTA-STS policy allows.
    fn deliver(
        &mut self,
        client: &Client,
        domain: &str,
        from: Option<lettre::Address>,
        message: &MessageRef<'_>,
        recipients: &[Address],
    ) -> Vec<RecipientOutcome> {
        let mut tried = Vec::new();
        // A session opened before the domain's policy said `enforce` (or in testing mode,
        // after a TLS failure) is not reused once it does.
        let enforced = self
            .policies
            .as_ref()
            .is_some_and(|policies| policies.enforced(domain));
        if let Some(mut session) = self
            .sessions
            .remove(domain)
            .filter(|session| !enforced || session.verifies_tls())
        {
            match session.transaction(client, from.clone(), message, recipients) {
                Ok(outcomes) => {
                    self.keep(domain, session);
                    return outcomes;
                }
                Err(Unreached { reason, .. }) => tried.push(reason),
            }
        }
        let exchangers = match self.directory.exchangers(domain) {
            Ok(exchangers) => exchangers,
            Err(mx::NoExchanger::NullMx) => {
                return vec![
                    RecipientOutcome::failed(
                        "5.1.10",
                        format!(
                        "x-spooler; {domain} publishes a null MX (RFC 7505): it accepts no mail"
                    ),
                        format!("the domain {domain} accepts no mail (null MX)"),
                    );
                    recipients.len()
                ]
            }
            Err(mx::NoExchanger::NotNow(reason)) => {
                return vec![RecipientOutcome::deferred(reason, None); recipients.len()]
            }
        };
        let policy = self
            .policies
            .as_ref()
            .and_then(|policies| policies.policy(&client.name, domain, &self.directory))
            .filter(|policy| policy.mode != StsMode::None);
        let transaction = Transaction {
            client,
            domain,
            from,
            message,
            recipients,
        };
        for exchanger in &exchangers {
            if let Some(policy) = &policy {
                if !policy.allows(&exchanger.name) {
                    let why = format!(
                        "{} is not among the mail exchangers the MTA-STS policy of {domain} names ({})",
                        exchanger.name,
                        policy.patterns()
                    );
                    if policy.mode == StsMode::Enforce {
                        tried.push(why);
                        continue;
                    }
                    log::warn!(
                        "{}: {why}; trying it, as the policy is in testing mode",
                        client.name
                    );
                }
            }
            for address in &exchanger.addresses {
                let label = format!("{}[{address}]:{}", exchanger.name, self.port);
                let attempt = self.attempt(
                    &transaction,
                    policy.as_ref(),
                    &exchanger.name,
                    address,
                    &label,
                );
                match attempt {
                    Ok(outcomes) => return outcomes,
                    Err(Unreached { reason, .. }) => {
                        log::info!(
                            "{}: {reason}; trying the next mail exchanger of {domain}",
                            client.name
                        );
                        tried.push(reason);
                    }
                }
            }
        }
        let reason = format!(
            "no mail exchanger of {domain} could be reached: {}",
            tried.join("; ")
        );
        vec![RecipientOutcome::deferred(reason, None); recipients.len()]
    }

    /// The transaction with one address of an exchanger, with the TLS its domain's policy
    /// asks: verified STARTTLS under `enforce`; under `testing` verified STARTTLS first and,
    /// if TLS fails, a logged second try as without a policy; otherwise opportunistic.
    fn attempt(
        &mut self,
        transaction: &Transaction<'_>,
        policy: Option<&Policy>,
        exchanger: &str,
        address: &IpAddr,
        label: &str,
    ) -> Result<Vec<RecipientOutcome>, Unreached> {
        let (client, domain) = (transaction.client, transaction.domain);
        let Some(mode) = policy.map(|policy| policy.mode) else {
            return self.open(
                transaction,
                opportunistic(client, exchanger),
                address,
                label,
            );
        };
        let requirement = format!(
            "the MTA-STS policy of {domain} requires STARTTLS with a certificate that verifies for {exchanger}"
        );
        let verified = self.verified(exchanger).map_err(|why| Unreached {
            reason: format!("{why} ({requirement})"),
            tls: true,
        });
        let attempt = verified.and_then(|parameters| {
            self.open(transaction, Security::Starttls(parameters), address, label)
        });
        match attempt {
            Err(Unreached { reason, tls: true }) if mode == StsMode::Testing => {
                log::warn!(
                    "{}: {reason}; {requirement}, but is in testing mode: delivering without",
                    client.name
                );
                self.open(
                    transaction,
                    opportunistic(client, exchanger),
                    address,
                    label,
                )
            }
            Err(Unreached { reason, tls: true }) => Err(Unreached {
                reason: format!("{reason} ({requirement})"),
                tls: true,
            }),
            other => other,
        }
    }

    /// A new session with `address`, kept for the domain if the transaction reaches it.
    fn open(
        &mut self,
        transaction: &Transaction<'_>,
        security: Security,
        address: &IpAddr,
        label: &str,
    ) -> Result<Vec<RecipientOutcome>, Unreached> {
        let mut session = Session::new(address.to_string(), self.port, label.to_owned(), security);
        let outcomes = session.transaction(
            transaction.client,
            transaction.from.clone(),
            transaction.message,
            transaction.recipients,
        )?;
        self.keep(transaction.domain, session);
        Ok(outcomes)
    }

    /// TLS parameters that verify `exchanger`'s certificate, against `ca_file` or the public
    /// roots.
    fn verified(&mut self, exchanger: &str) -> Result<TlsParameters, String> {
        if let Some(parameters) = self.verified.get(exchanger) {
            return Ok(parameters.clone());
        }
        let parameters = tls_parameters(exchanger, self.ca_file.as_deref(), false)?;
        if self.verified.len() >= VERIFIED_EXCHANGERS {
            self.verified.clear();
        }
        self.verified
            .insert(exchanger.to_owned(), parameters.clone());
        Ok(parameters)
    }

    /// Keeps `session` open for `domain`'s next message, closing the session idle longest when
    /// too many are open.
    fn keep(&mut self, domain: &str, session: Session) {
        self.sessions
            .retain(|_, session| session.last_used().elapsed() < IDLE_LIMIT);
        if self.sessions.len() >= OPEN_DESTINATIONS {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used())
                .map(|(d, _)| d.clone());
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        self.sessions.insert(domain.to_owned(), session);
    }
}

/// Opportunistic STARTTLS with an exchanger: encryption against passive listeners, the
/// certificate not checked (RFC 7435); plain text if even that cannot be set up.
fn opportunistic(client: &Client, exchanger: &str) -> Security {
    match tls_parameters(exchanger, None, true) {
        Ok(parameters) => Security::Opportunistic(parameters),
        Err(why) => {
            log::debug!("{}: no TLS with {exchanger}: {why}", client.name);
            Security::Plain
        }
    }
}

/// One message's transaction with one domain, as it is offered to each exchanger in turn.
struct Transaction<'a> {
    client: &'a Client,
    domain: &'a str,
    from: Option<lettre::Address>,
    message: &'a MessageRef<'a>,
    recipients: &'a [Address],
}

/// How many exchangers' verifying TLS parameters are kept before they are made afresh.
const VERIFIED_EXCHANGERS: usize = 256;

/// TLS for `host`, verified against the built-in public roots or, with `ca_file`, against
/// exactly the CA certificates in that file.
fn tls_parameters(
    host: &str,
    ca_file: Option<&str>,
    accept_invalid_certificates: bool,
) -> Result<TlsParameters, String> {
    // Verification off means the name too: lettre checks it apart from the chain.
    let mut builder = TlsParameters::builder(host.to_owned())
        .dangerous_accept_invalid_certs(accept_invalid_certificates)
        .dangerous_accept_invalid_hostnames(accept_invalid_certificates);
    if accept_invalid_certificates {
        // Nothing is checked, so no root store: loading the public roots would cost every
        // new connection of opportunistic TLS a parse of them.
        builder = builder.certificate_store(CertificateStore::None);
    }
    if let Some(file) = ca_file {
        builder = builder.certificate_store(CertificateStore::None);
        for certificate in transport_support::tls::read_ca_file(file)? {
            let certificate = Certificate::from_der(certificate.to_vec())
                .map_err(|e| format!("ca_file {file}: {e}"))?;
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS for {host}: {}", explain(&e)))
}

impl Transport for SmtpTransport {
    fn address_types(&self) -> Vec<String> {
        self.address_types.clone()
    }

    /// In MX mode each domain is a destination of its own, which the host schedules apart.
    fn delivers_per_domain(&self) -> bool {
        matches!(self.route, Route::Mx(_))
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        let mine: Vec<usize> = (0..recipients.len())
            .filter(|&i| self.serves(&recipients[i]))
            .collect();
        let mut outcomes = vec![RecipientOutcome::NotMine; recipients.len()];
        if !mine.is_empty() {
            let addresses: Vec<Address> = mine.iter().map(|&i| recipients[i].clone()).collect();
            for (index, outcome) in mine.into_iter().zip(self.deliver(&message, &addresses)) {
                outcomes[index] = outcome;
            }
        }
        for (recipient, outcome) in recipients.iter().zip(&outcomes) {
            log::debug!(
                "{}: message {} to {recipient}: {outcome:?}",
                self.client.name,
                message.envelope.id
            );
        }
        Ok(outcomes)
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "smtp",
        &["SMTP"],
        SmtpTransport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::{ErrorKind, ProviderState};
    use provider_testkit::{check_transport, message, open_transport, submit};
    use spooler_tests::{free_port, real_server, SmtpSink};

    const RECIPIENTS: [&str; 2] = ["SMTP:bob@example.net", "SMTP:carol@example.org"];

    fn config(port: u16) -> String {
        format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nhelo = \"testkit.example\"\ntimeout_secs = 5")
    }

    #[test]
    fn keeps_the_hosts_transport_contract_with_a_server() {
        if real_server("smtp-sink").is_none() {
            return;
        }
        let sink = SmtpSink::discarding(free_port(), &[]);
        check_transport(library, "smtp", &config(sink.port), &RECIPIENTS).unwrap();
        let (mut transport, _) = open_transport(library, "smtp", &config(sink.port)).unwrap();
        let outcomes = submit(
            &mut transport,
            &message(&RECIPIENTS, "Subject: hi\r\n\r\nx\r\n"),
        );
        assert!(
            matches!(
                outcomes.as_deref(),
                Ok([
                    RecipientOutcome::Delivered { .. },
                    RecipientOutcome::Delivered { .. }
                ])
            ),
            "{outcomes:?}"
        );
    }

    #[test]
    fn keeps_the_hosts_transport_contract_with_the_server_down() {
        let port = free_port();
        check_transport(library, "smtp", &config(port), &RECIPIENTS).unwrap();
        let (mut transport, host) = open_transport(library, "smtp", &config(port)).unwrap();
        let outcomes = submit(
            &mut transport,
            &message(&RECIPIENTS, "Subject: hi\r\n\r\nx\r\n"),
        );
        assert!(
            matches!(
                outcomes.as_deref(),
                Ok([
                    RecipientOutcome::Deferred { .. },
                    RecipientOutcome::Deferred { .. }
                ])
            ),
            "a refused connection defers every recipient: {outcomes:?}"
        );
        let statuses = host.statuses();
        assert!(
            matches!(
                &statuses[..],
                [(ProviderState::Offline, text)]
                    if text.starts_with(&format!("cannot connect to 127.0.0.1:{port}: "))
                        && text.to_lowercase().contains("refused")
            ),
            "and takes the transport offline: {statuses:?}"
        );
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let refused = |config: &str| {
            let error = open_transport(library, "smtp", config)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        assert_eq!(
            refused("host = \"mail.example.com\"\nport = \"x\""),
            "instance \"smtp-test\": key port at line 2: invalid type: string \"x\", expected u16"
        );
        let misspelt = refused("host = \"mail.example.com\"\nprot = 25");
        assert!(
            misspelt
                .starts_with("instance \"smtp-test\": key prot at line 2: unknown field `prot`"),
            "{misspelt}"
        );
        let ca = refused("host = \"mail.example.com\"\ntls = \"none\"\nca_file = \"/ca.pem\"");
        assert!(ca.contains("key ca_file: it is for TLS"), "{ca}");
        let user = refused("host = \"mail.example.com\"\nusername = \"spooler\"");
        assert!(user.contains("username and password"), "{user}");
        let no_host = refused("port = 25");
        assert!(
            no_host.contains("key host: the smart host is missing")
                && no_host.contains("mode = \"mx\""),
            "{no_host}"
        );
        let mixed = refused("mode = \"mx\"\nhost = \"mail.example.com\"");
        assert!(
            mixed.contains("key host: it is for a smart host"),
            "{mixed}"
        );
        let stray = refused("host = \"mail.example.com\"\nmx_port = 2525");
        assert!(
            stray.contains("key mx_port: it is for mode = \"mx\""),
            "{stray}"
        );
        let sts = refused("host = \"mail.example.com\"\nmta_sts_port = 8443");
        assert!(
            sts.contains("key mta_sts_port: it is for mode = \"mx\""),
            "{sts}"
        );
        let trust = refused("mode = \"mx\"\nmta_sts = false\nca_file = \"/ca.pem\"");
        assert!(
            trust.contains("key ca_file: in MX mode it is the trust for MTA-STS"),
            "{trust}"
        );
        let resolver = refused("mode = \"mx\"\nresolver = \"dns.example\"");
        assert!(
            resolver.contains("key resolver: `dns.example` is not a DNS server's address"),
            "{resolver}"
        );
    }

    #[test]
    fn tls_is_verified_against_the_ca_file_when_one_is_given() {
        let missing = tls_parameters("mail.example.com", Some("/nonexistent/ca.pem"), false)
            .err()
            .unwrap();
        assert!(
            missing.contains("ca_file /nonexistent/ca.pem: cannot read it"),
            "{missing}"
        );
        assert!(tls_parameters("mail.example.com", None, false).is_ok());
    }
}
