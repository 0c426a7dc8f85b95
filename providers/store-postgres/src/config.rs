//! The store's configuration table: where the database is and how the connection to it is
//! secured, who this host is among those sharing it, and how long a lease lasts.

use std::time::Duration;

use provider_abi::ProviderError;
use serde::Deserialize;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::db::explain;
use crate::tls;

/// The table as an operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    /// `postgres://user@server:port/database`; or the parts below.
    url: Option<String>,
    server: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    database: Option<String>,
    /// Where the password is read from, so that it need not stand in the profile.
    password_file: Option<String>,
    password_env: Option<String>,
    /// TLS, as libpq names and means them (see `tls`); also accepted in `url`.
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    /// This host's name among the hosts sharing the database.
    host_name: Option<String>,
    /// How long a lease lasts without renewal, in seconds.
    #[serde(default = "default_lease")]
    lease: u64,
    /// The address types this store delivers itself.
    #[serde(default = "default_local_types")]
    delivers_itself: Vec<String>,
}

fn default_lease() -> u64 {
    60
}

fn default_local_types() -> Vec<String> {
    vec!["LOCAL".into()]
}

/// Where the database is and how to reach it; the listener clones it for its own
/// connection.
#[derive(Clone)]
pub struct Server {
    /// How to connect.
    pub connection: postgres::Config,
    /// The connection for messages: the server and database, never the password.
    pub describe: String,
    /// The TLS connector for every connection to the server.
    pub tls: MakeRustlsConnect,
    /// The `sslmode` in force.
    pub tls_mode: tls::Mode,
}

impl Server {
    /// A new connection; an error says to which server, and why, in words to act on (a
    /// refused certificate says which setting to change).
    pub fn connect(&self) -> Result<postgres::Client, String> {
        self.connection.connect(self.tls.clone()).map_err(|error| {
            let why = tls::refusal(&self.describe, &error).unwrap_or_else(|| explain(&error));
            format!("cannot connect to {}: {why}", self.describe)
        })
    }
}

/// The configuration, checked.
pub struct Config {
    /// The database server.
    pub server: Server,
    /// This host's name.
    pub host_name: String,
    /// How long a lease lasts.
    pub lease: Duration,
    /// The address types this store delivers itself, upper case.
    pub delivers_itself: Vec<String>,
}

impl Config {
    /// Reads the table of store instance `name`.
    pub fn parse(name: &str, text: &str) -> Result<Config, ProviderError> {
        let bad = |why: String| provider_abi::config::error(name, "", why);
        let mut table: Table = provider_abi::config::from_toml(name, text)?;
        let mut connection = match table.url.take() {
            Some(url) => {
                let url = take_tls_parameters(&url, &mut table).map_err(bad)?;
                url.parse::<postgres::Config>()
                    .map_err(|error| bad(format!("url: {error}")))?
            }
            None => postgres::Config::new(),
        };
        if let Some(server) = &table.server {
            connection.host(server);
        }
        if let Some(port) = table.port {
            connection.port(port);
        }
        if let Some(user) = &table.user {
            connection.user(user);
        }
        if let Some(database) = &table.database {
            connection.dbname(database);
        }
        if connection.get_hosts().is_empty() {
            return Err(bad(
                "no database server: set `url` (postgres://user@server/database) or `server`"
                    .into(),
            ));
        }
        if connection.get_user().is_none() {
            return Err(bad("no database user: set it in `url` or as `user`".into()));
        }
        match (&table.password_file, &table.password_env) {
            (Some(_), Some(_)) => {
                return Err(bad("set `password_file` or `password_env`, not both".into()))
            }
            (Some(file), None) => {
                let password = std::fs::read_to_string(file)
                    .map_err(|error| bad(format!("password_file {file}: {error}")))?;
                connection.password(password.trim_end_matches(['\r', '\n']));
            }
            (None, Some(variable)) => {
                let password = std::env::var(variable).map_err(|_| {
                    bad(format!("password_env: the variable {variable} is not set"))
                })?;
                connection.password(password);
            }
            (None, None) => {}
        }
        if table.lease < 3 {
            return Err(bad(format!(
                "lease: {} s is too short to renew in time; give at least 3 (seconds)",
                table.lease
            )));
        }
        if let Some(bad_type) = table
            .delivers_itself
            .iter()
            .find(|t| !provider_abi::address::is_address_type(t))
        {
            return Err(bad(format!(
                "delivers_itself: `{bad_type}` is not an address type"
            )));
        }
        let host_name = match table.host_name {
            Some(host) if host.trim().is_empty() => {
                return Err(bad("host_name is empty".into()));
            }
            Some(host) => host,
            None => provider_abi::host::hostname(),
        };
        let (tls_mode, tls) = tls::connector(
            &tls::Settings {
                mode: table.sslmode.as_deref(),
                root_cert: table.sslrootcert.as_deref(),
                cert: table.sslcert.as_deref(),
                key: table.sslkey.as_deref(),
            },
            connection.get_hosts(),
        )
        .map_err(bad)?;
        connection.ssl_mode(tls_mode.negotiation());
        connection.application_name(&format!("spooler-host {host_name}"));
        connection.connect_timeout(Duration::from_secs(10));
        // Commits wait for the disk only where the store says so (see `PostgresStore::run`).
        connection.options("-c synchronous_commit=off");
        Ok(Config {
            server: Server {
                describe: describe(&connection),
                connection,
                tls,
                tls_mode,
            },
            host_name,
            lease: Duration::from_secs(table.lease),
            delivers_itself: table
                .delivers_itself
                .iter()
                .map(|t| t.to_ascii_uppercase())
                .collect(),
        })
    }
}

/// `url` without its TLS parameters (`?sslmode=verify-full&sslrootcert=…`, which the
/// PostgreSQL client's parser does not know all of), those moved into `table`. A parameter
/// set both in the URL and as a key is refused, so that neither silently wins.
fn take_tls_parameters(url: &str, table: &mut Table) -> Result<String, String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for parameter in query.split('&') {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let slot = match key {
            "sslmode" => &mut table.sslmode,
            "sslrootcert" => &mut table.sslrootcert,
            "sslcert" => &mut table.sslcert,
            "sslkey" => &mut table.sslkey,
            _ => {
                kept.push(parameter);
                continue;
            }
        };
        if slot.is_some() {
            return Err(format!("{key} is set both in `url` and as a key; keep one"));
        }
        *slot = Some(value.to_owned());
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

/// `user@server:port/database`, for messages.
fn describe(connection: &postgres::Config) -> String {
    let server = match connection.get_hosts().first() {
        Some(postgres::config::Host::Tcp(name)) => name.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => String::new(),
    };
    let port = connection.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{server}:{port}/{}",
        connection.get_user().unwrap_or_default(),
        connection
            .get_dbname()
            .or(connection.get_user())
            .unwrap_or_default()
    )
}
