//! An MTA-STS policy server: OpenSSL's `s_server -WWW`, serving one domain's
//! `/.well-known/mta-sts.txt` over HTTPS with a test certificate, on a loopback address.

use std::fs;
use std::process::{Command, Stdio};

use crate::{real_server, wait_until, Certificates, Site, PROMPTLY};

/// A private HTTPS server for one policy; stopped when dropped.
pub struct PolicyServer {
    child: std::process::Child,
}

impl PolicyServer {
    /// Serves `policy` (the text of `mta-sts.txt`) on `ip:port` with the server certificate
    /// of `certificates`, from a folder `name` of `site`; `None` (SKIPPED) without openssl.
    pub fn start(
        site: &Site,
        name: &str,
        ip: &str,
        port: u16,
        certificates: &Certificates,
        policy: &str,
    ) -> Option<PolicyServer> {
        let openssl = real_server("openssl")?;
        let root = site.path(name);
        fs::create_dir_all(root.join(".well-known")).expect("creating the policy's folder");
        fs::write(root.join(".well-known/mta-sts.txt"), policy).expect("writing the policy");
        // -WWW answers `GET /path` with the file at path (relative to its folder) as
        // text/plain; it serves one connection at a time, which is all a test needs.
        let child = Command::new(openssl)
            .args(["s_server", "-WWW", "-quiet", "-accept"])
            .arg(format!("{ip}:{port}"))
            .arg("-cert")
            .arg(&certificates.cert_file)
            .arg("-key")
            .arg(&certificates.key_file)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let mut server = PolicyServer { child };
        wait_until(PROMPTLY, "the policy server listens", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("openssl s_server exited with {status}");
            }
            std::net::TcpStream::connect((ip, port)).is_ok()
        });
        Some(server)
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
