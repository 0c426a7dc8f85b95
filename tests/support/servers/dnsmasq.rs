//! Debian's `dnsmasq` as the DNS of a test: the MX, A and TXT records it is given, for
//! names under `.test`, on a loopback port; every other name does not exist (NXDOMAIN).

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};

use crate::{free_port, real_server, wait_until, PROMPTLY};

/// The records a [`Dnsmasq`] serves.
#[derive(Default)]
pub struct Zone {
    lines: String,
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// `domain`'s mail goes to `exchanger`, at `preference`.
    pub fn mx(mut self, domain: &str, exchanger: &str, preference: u16) -> Zone {
        writeln!(self.lines, "mx-host={domain},{exchanger},{preference}").unwrap();
        self
    }

    /// `domain`'s mail goes to its one exchanger `mx.<domain>`, at `ip`.
    pub fn exchanger(self, domain: &str, ip: &str) -> Zone {
        let name = format!("mx.{domain}");
        self.mx(domain, &name, 10).address(&name, ip)
    }

    /// `domain` takes no mail: the one record `0 .` (RFC 7505).
    pub fn null_mx(self, domain: &str) -> Zone {
        self.mx(domain, ".", 0)
    }

    /// `name` has the address `ip`.
    pub fn address(mut self, name: &str, ip: &str) -> Zone {
        writeln!(self.lines, "host-record={name},{ip}").unwrap();
        self
    }

    /// `name` has a TXT record holding `text` (in strings of at most 255 characters, as a
    /// DKIM key's record is published).
    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        let strings: Vec<String> = text
            .as_bytes()
            .chunks(255)
            .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
            .collect();
        writeln!(self.lines, "txt-record={name},{}", strings.join(",")).unwrap();
        self
    }
}

/// A private dnsmasq answering on `127.0.0.1:port` (UDP and TCP); stopped when dropped.
pub struct Dnsmasq {
    child: std::process::Child,
    folder: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

impl Dnsmasq {
    /// Starts dnsmasq serving `zone`, or says SKIPPED and returns `None` when it is not
    /// installed (a failure under `SPOOLER_REQUIRE_SERVERS=1`). Waits until it answers.
    pub fn start(zone: Zone) -> Option<Dnsmasq> {
        let program = real_server("dnsmasq")?;
        let folder = tempfile::tempdir().expect("a temporary folder");
        let port = free_port();
        let config = folder.path().join("dnsmasq.conf");
        // Only its own records, nothing from /etc/hosts or upstream servers, and every name
        // under .test answered here (NXDOMAIN when it has no record); answers live a minute,
        // so resolvers cache them as they would real ones.
        fs::write(
            &config,
            format!(
                "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
                 local=/test/\nlocal-ttl=60\nlog-queries\n{}",
                zone.lines
            ),
        )
        .expect("writing dnsmasq's configuration");
        let log = fs::File::create(folder.path().join("dnsmasq.log")).expect("dnsmasq's log");
        let child = Command::new(program)
            .arg(format!("--conf-file={}", config.display()))
            .arg(format!(
                "--pid-file={}",
                folder.path().join("pid").display()
            ))
            .args(["--keep-in-foreground", "--log-facility=-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq starts");
        let mut server = Dnsmasq {
            child,
            folder,
            port,
        };
        wait_until(PROMPTLY, "dnsmasq answers", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("dnsmasq exited with {status}:\n{}", server.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(server)
    }

    /// Its log (each query and its answer), for a failure message.
    pub fn log(&self) -> String {
        fs::read_to_string(self.folder.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
