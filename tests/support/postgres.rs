//! A private PostgreSQL server for a test: `initdb` and `pg_ctl` in a temporary folder, on a
//! free loopback port, stopped and removed when dropped. PostgreSQL refuses to run as root,
//! so a test running as root starts it as the `postgres` system user.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{free_port, set_mode};

/// The role the tests connect as: the server's superuser, trusted on loopback.
const ROLE: &str = "spooler";

/// A running private PostgreSQL server.
pub struct Postgres {
    folder: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// Where PostgreSQL's server programs are: Debian keeps them out of the PATH.
fn server_programs() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.reverse();
    candidates.push("/usr/local/bin".into());
    candidates.push("/usr/bin".into());
    candidates
        .into_iter()
        .find(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
}

impl Postgres {
    /// Starts a server, or says SKIPPED and returns `None` when PostgreSQL is not installed
    /// (a failure under `SPOOLER_REQUIRE_SERVERS=1`, which `.ci/run` sets).
    pub fn start() -> Option<Postgres> {
        let Some(bin) = server_programs() else {
            assert!(
                std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
                "PostgreSQL is missing, and SPOOLER_REQUIRE_SERVERS=1 says the real servers must be here (.ci/run installs it)"
            );
            eprintln!("SKIPPED: PostgreSQL is not installed; `bash .ci/run` installs it (apt-get install postgresql)");
            return None;
        };
        let folder = tempfile::tempdir().expect("a temporary folder");
        let server = Postgres {
            folder,
            bin,
            port: free_port(),
        };
        if as_root() {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(server.folder.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand the folder to the postgres user"
            );
        }
        set_mode(server.folder.path(), 0o755);
        let data = server.folder.path().join("data");
        server.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                ROLE,
                "--auth=trust",
                "--no-sync",
            ],
        );
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            server.port,
            server.folder.path().display()
        );
        let log = server.folder.path().join("server.log");
        let started = server.try_run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if let Err(why) = started {
            panic!(
                "PostgreSQL did not start: {why}\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Some(server)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on it, as the store's `url` takes it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its URL.
    pub fn create_database(&self, database: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{database}\""));
        self.url(database)
    }

    /// Runs `sql` in `database` and returns what it printed: rows unaligned, one per line,
    /// without headers.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = [self.bin.join("psql"), PathBuf::from("/usr/bin/psql")]
            .into_iter()
            .find(|p| p.exists())
            .expect("psql is installed with PostgreSQL");
        let output = Command::new(psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
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

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(why) = self.try_run(program, args) {
            panic!("{program} failed: {why}");
        }
    }

    /// Runs a server program, as the `postgres` user when this is root.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
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
                "20",
                "stop",
            ],
        );
        if let Err(why) = stopped {
            eprintln!("PostgreSQL did not stop: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Postgres;

    #[test]
    fn two_private_servers_start_answer_and_stop() {
        let Some(first) = Postgres::start() else {
            return;
        };
        let second = Postgres::start().expect("a second server");
        assert_ne!(first.port(), second.port());
        first.create_database("one");
        assert_eq!(first.psql("one", "SELECT 40 + 2").trim(), "42");
        assert_eq!(second.psql("postgres", "SELECT 1").trim(), "1");
    }
}
