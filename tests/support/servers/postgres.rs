//! A private PostgreSQL server for a test: `initdb` and `pg_ctl` in a temporary folder, on a
//! free loopback port, stopped and removed when dropped. PostgreSQL refuses to run as root,
//! so a test running as root starts it as the `postgres` system user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, set_mode, Certificates};

/// The role the tests connect as: the server's superuser, trusted on loopback.
const ROLE: &str = "spooler";

/// The system user the server runs as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// How long `pg_ctl` may take to start or stop the server, in seconds.
const START_SECONDS: &str = "60";
const STOP_SECONDS: &str = "20";

/// How many ports to try when another process takes the free port first.
const PORT_ATTEMPTS: usize = 5;

/// A running private PostgreSQL server.
pub struct Postgres {
    folder: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The server's command-line options (`pg_ctl -o`), kept to start it again.
    options: String,
}

/// Where PostgreSQL's server programs (`initdb`, `pg_ctl`) are: the PATH, /usr/local/bin,
/// then Debian's /usr/lib/postgresql/<version>/bin (out of the PATH), newest version first.
/// A symbolic link (/usr/local/bin/initdb on some machines) is followed to its real folder,
/// so that `psql` is taken from the same version.
fn server_programs() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    candidates.push("/usr/local/bin".into());
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    let version = e
                        .file_name()
                        .to_string_lossy()
                        .split('.')
                        .map(|part| part.parse().unwrap_or(0))
                        .collect();
                    (version, e.path().join("bin"))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    candidates.extend(versions.into_iter().rev().map(|(_, bin)| bin));
    candidates.into_iter().find_map(|bin| {
        let initdb = fs::canonicalize(bin.join("initdb")).ok()?;
        let real = initdb.parent()?;
        if real.join("pg_ctl").exists() {
            Some(real.to_owned())
        } else if bin.join("pg_ctl").exists() {
            Some(bin)
        } else {
            None
        }
    })
}

/// The last lines of a server log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Postgres {
    /// Starts a server, or says SKIPPED and returns `None` when PostgreSQL is not installed
    /// (a failure under `SPOOLER_REQUIRE_SERVERS=1`, which `.ci/run` sets). Panics, with the
    /// end of the server's log, when it is installed but does not start.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = server_programs() else {
            assert!(
                std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
                "PostgreSQL is missing, and SPOOLER_REQUIRE_SERVERS=1 says the real servers must be here (.ci/run installs it)"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed (no initdb and pg_ctl in the PATH, /usr/local/bin or /usr/lib/postgresql/*/bin); `bash .ci/run` installs it (apt-get install postgresql)");
            return None;
        };
        let folder = tempfile::tempdir().expect("a temporary folder");
        let mut server = Postgres {
            folder,
            bin,
            port: 0,
            options: String::new(),
        };
        if as_root() {
            // The data folder is made by initdb running as the postgres user, in ours.
            let status = Command::new("chown")
                .arg(format!("{SYSTEM_USER}:"))
                .arg(server.folder.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand the folder to the {SYSTEM_USER} user"
            );
        }
        set_mode(server.folder.path(), 0o755);
        let data = server.data();
        if let Err(why) = server.try_run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                ROLE,
                "--auth=trust",
                "--no-sync",
            ],
        ) {
            panic!(
                "initdb failed in {} (as root, the {SYSTEM_USER} user must be able to reach it): {why}",
                server.folder.path().display()
            );
        }
        let log = server.folder.path().join("server.log");
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            let logged_before = fs::metadata(&log).map_or(0, |m| m.len() as usize);
            // Loopback only (initdb's trust covers local connections); fsync stays on so
            // that the benchmark measures a durable store.
            server.options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on -c max_connections=200",
                server.port,
                server.folder.path().display()
            );
            match server.pg_ctl_start() {
                Ok(()) => return Some(server),
                // Another process took the port between free_port and the server's bind.
                Err(_)
                    if attempt < PORT_ATTEMPTS
                        && fs::read(&log).is_ok_and(|text| {
                            String::from_utf8_lossy(text.get(logged_before..).unwrap_or_default())
                                .contains("could not bind")
                        }) => {}
                Err(why) => panic!(
                    "PostgreSQL did not start on port {}: {why}\nthe end of {}:\n{}",
                    server.port,
                    log.display(),
                    log_tail(&log)
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `pg_ctl start` with the server's options, waiting until it accepts connections.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.folder.path().join("server.log");
        self.try_run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &self.options,
                "-w",
                "-t",
                START_SECONDS,
                "start",
            ],
        )
    }

    /// `pg_ctl` with `mode` (`stop` or `restart`), `-m fast`: the server ends every session
    /// and stops (then starts again, for `restart`), as an operator's restart does.
    fn pg_ctl_fast(&self, mode: &str) {
        let data = self.data();
        let log = self.folder.path().join("server.log");
        let mut args = vec!["-D", data.to_str().expect("a UTF-8 path"), "-m", "fast"];
        if mode == "restart" {
            args.extend(["-l", log.to_str().expect("a UTF-8 path")]);
        }
        args.extend(["-w", "-t", START_SECONDS, mode]);
        if let Err(why) = self.try_run("pg_ctl", &args) {
            panic!("pg_ctl {mode} failed: {why}\n{}", log_tail(&log));
        }
    }

    /// Restarts the server (`pg_ctl restart -m fast`): every connection is cut, and the server
    /// is back, on the same port, when this returns.
    pub fn restart(&self) {
        self.pg_ctl_fast("restart");
    }

    /// Stops the server (`pg_ctl stop -m fast`) until [`start_again`](Self::start_again).
    pub fn stop(&self) {
        self.pg_ctl_fast("stop");
    }

    /// Starts a stopped server again, on the same port.
    pub fn start_again(&self) {
        if let Err(why) = self.pg_ctl_start() {
            panic!(
                "PostgreSQL did not start again: {why}\n{}",
                log_tail(&self.folder.path().join("server.log"))
            );
        }
    }

    /// Sets server `settings` with `ALTER SYSTEM` and reloads the configuration. A setting
    /// that needs a restart (`shared_preload_libraries`) takes effect at the next
    /// [`restart`](Self::restart).
    pub fn configure(&self, settings: &[(&str, &str)]) {
        for (name, value) in settings {
            self.psql(
                "postgres",
                &format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''")),
            );
        }
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// Turns TLS on with `certificates`' server certificate and key, trusting their CA for
    /// client certificates. Clients of `certificate_database` must then come over TLS with
    /// a client certificate issued to their role (`hostssl … cert`); other databases keep
    /// trusting loopback, with or without TLS.
    pub fn enable_tls(&self, certificates: &Certificates, certificate_database: &str) {
        let data = self.data();
        for (from, to) in [
            (&certificates.cert_file, "server.crt"),
            (&certificates.key_file, "server.key"),
            (&certificates.ca_file, "root.crt"),
        ] {
            let copy = data.join(to);
            fs::copy(from, &copy).expect("copying a certificate into the data folder");
            set_mode(&copy, 0o600);
            if as_root() {
                let status = Command::new("chown")
                    .arg(format!("{SYSTEM_USER}:"))
                    .arg(&copy)
                    .status()
                    .expect("chown runs");
                assert!(status.success(), "cannot hand {to} to {SYSTEM_USER}");
            }
        }
        let hba = data.join("pg_hba.conf");
        let rules = fs::read_to_string(&hba).expect("reading pg_hba.conf");
        fs::write(
            &hba,
            format!("hostssl {certificate_database} all 127.0.0.1/32 cert\n{rules}"),
        )
        .expect("writing pg_hba.conf");
        self.configure(&[
            ("ssl", "on"),
            ("ssl_cert_file", "server.crt"),
            ("ssl_key_file", "server.key"),
            ("ssl_ca_file", "root.crt"),
        ]);
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on it, as the store's `url` takes it:
    /// `postgres://spooler@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its URL.
    pub fn create_database(&self, database: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{database}\""));
        self.url(database)
    }

    /// Runs `sql` in `database` and returns what it printed: rows unaligned (columns
    /// separated by `|`), one per line, without headers. Panics with psql's message when
    /// the SQL fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = [self.bin.join("psql"), PathBuf::from("/usr/bin/psql")]
            .into_iter()
            .find(|p| p.exists())
            .expect("psql is installed with PostgreSQL");
        let output = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a server program, as the `postgres` user when this is root.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if as_root() {
            as_system_user(&path)
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(self.folder.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run {}: {error}", path.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn data(&self) -> PathBuf {
        self.folder.path().join("data")
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `program` as the postgres user: `runuser` (util-linux, in /usr/sbin on
/// Debian, which a test's PATH may lack), else `su`, which hands the arguments after the
/// user on to the shell (after `--`, so that su does not take `-D` for its own).
fn as_system_user(program: &Path) -> Command {
    let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if let Some(runuser) = runuser {
        let mut command = Command::new(runuser);
        command.args(["-u", SYSTEM_USER, "--"]).arg(program);
        command
    } else {
        let mut command = Command::new("su");
        command
            .args([
                "-s",
                "/bin/sh",
                "-c",
                "exec \"$0\" \"$@\"",
                "--",
                SYSTEM_USER,
            ])
            .arg(program);
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let stopped = self.try_run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "-t",
                STOP_SECONDS,
                "stop",
            ],
        );
        if let Err(why) = stopped {
            eprintln!("PostgreSQL did not stop: {why}");
        }
        // The folder (a TempDir) is removed after this, with the server's files in it.
    }
}

#[cfg(test)]
mod tests {
    use super::Postgres;

    #[test]
    fn two_private_servers_start_in_parallel_answer_and_stop() {
        let started: Vec<Option<Postgres>> = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..2).map(|_| scope.spawn(Postgres::start)).collect();
            starting
                .into_iter()
                .map(|s| s.join().expect("a server starts"))
                .collect()
        });
        let Some(mut servers) = started.into_iter().collect::<Option<Vec<_>>>() else {
            return; // Skipped: PostgreSQL is not installed (said so).
        };
        let second = servers.pop().unwrap();
        let first = servers.pop().unwrap();
        assert_ne!(first.port(), second.port());

        let url = first.create_database("one");
        assert_eq!(
            url,
            format!("postgres://spooler@127.0.0.1:{}/one", first.port())
        );
        assert_eq!(first.psql("one", "SELECT 1").trim(), "1");
        second.create_database("two");
        second.psql("two", "CREATE TABLE t (n int, s text)");
        second.psql("two", "INSERT INTO t VALUES (1, 'a'), (2, 'b')");
        assert_eq!(
            second.psql("two", "SELECT n, s FROM t ORDER BY n").trim(),
            "1|a\n2|b"
        );
        assert_eq!(
            second.psql("postgres", "SHOW fsync").trim(),
            "on",
            "a durable server"
        );
        first.psql("postgres", "DROP DATABASE one");
        assert_eq!(
            first
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_database WHERE datname = 'one'"
                )
                .trim(),
            "0"
        );

        // Dropping one stops it and removes its folder; the other goes on.
        let (folder, port) = (first.folder.path().to_owned(), first.port());
        drop(first);
        assert!(!folder.exists(), "{} is removed", folder.display());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        assert_eq!(second.psql("two", "SELECT count(*) FROM t").trim(), "2");
    }
}
