//! Postfix's `smtp-sink`: an SMTP server that takes mail, or refuses what it is told to.

use std::fs;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{real_server, set_mode, wait_until, Site, PROMPTLY};

/// Postfix's `smtp-sink` on a loopback port, dumping every transaction into a folder of a
/// site (or, for the benchmark, discarding them).
///
/// It borrows the site it dumps into: a site dropped while its sink runs deletes the folder,
/// and with it whatever the sink dumped until then (smtp-sink makes the folder again at its
/// next dump, so only the first few go missing: a flaky "acknowledged but never received").
pub struct SmtpSink<'site> {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
    dump: Option<PathBuf>,
    site: PhantomData<&'site Site>,
}

impl<'site> SmtpSink<'site> {
    /// Starts `smtp-sink` with `options` (e.g. `["-f", "RCPT"]`) on `port`, dumping into
    /// `site/<name>`. Waits until it accepts connections.
    pub fn start(site: &'site Site, name: &str, port: u16, options: &[&str]) -> SmtpSink<'site> {
        SmtpSink::start_at(site, name, "127.0.0.1", port, options)
    }

    /// Starts `smtp-sink` as [`SmtpSink::start`] does, on another loopback address `ip`
    /// (a mail exchanger of a test's DNS).
    pub fn start_at(
        site: &'site Site,
        name: &str,
        ip: &str,
        port: u16,
        options: &[&str],
    ) -> SmtpSink<'site> {
        let dump = site.path(name);
        fs::create_dir_all(&dump).expect("creating the sink's folder");
        // smtp-sink drops to `nobody` when started as root; it must be able to write there.
        set_mode(&dump, 0o777);
        let template = format!("{}/%H%M%S.", dump.display());
        let mut arguments = vec!["-d", &template];
        arguments.extend_from_slice(options);
        SmtpSink::spawn(ip, port, &arguments, Some(dump.clone()))
    }

    /// Starts `smtp-sink` with `options` on `port`, keeping nothing of what it receives.
    pub fn discarding(port: u16, options: &[&str]) -> SmtpSink<'static> {
        SmtpSink::discarding_at("127.0.0.1", port, options)
    }

    /// [`SmtpSink::discarding`] on another loopback address `ip`.
    pub fn discarding_at(ip: &str, port: u16, options: &[&str]) -> SmtpSink<'static> {
        SmtpSink::spawn(ip, port, options, None)
    }

    fn spawn(ip: &str, port: u16, options: &[&str], dump: Option<PathBuf>) -> SmtpSink<'site> {
        let program = real_server("smtp-sink").expect("the caller checked for smtp-sink");
        let mut command = Command::new(program);
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .args(options)
            .args([&format!("{ip}:{port}"), "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink starts");
        wait_until(PROMPTLY, "smtp-sink listens", || {
            std::net::TcpStream::connect((ip, port)).is_ok()
        });
        SmtpSink {
            child,
            port,
            dump,
            site: PhantomData,
        }
    }

    /// Every transaction it took, as dumped (`X-Mail-Args`, `X-Rcpt-Args`, then the message).
    pub fn transactions(&self) -> Vec<String> {
        self.transactions_with_times()
            .into_iter()
            .map(|(text, _)| text)
            .collect()
    }

    /// Every transaction it took, with when it was dumped.
    pub fn transactions_with_times(&self) -> Vec<(String, std::time::SystemTime)> {
        let mut files = self.dumped();
        files.sort();
        files
            .iter()
            .filter_map(|f| {
                let modified = fs::metadata(f).and_then(|m| m.modified()).ok()?;
                Some((fs::read_to_string(f).ok()?, modified))
            })
            .collect()
    }

    /// How many transactions it took, without reading them.
    pub fn transactions_count(&self) -> usize {
        self.dumped().len()
    }

    fn dumped(&self) -> Vec<PathBuf> {
        let Some(dump) = &self.dump else {
            return Vec::new();
        };
        fs::read_dir(dump)
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }
}

impl Drop for SmtpSink<'_> {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
