//! A private Dovecot serving one POP3 mailbox, optionally with STLS and POP3S.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{free_port, real_server, wait_until, Certificates, Site, PROMPTLY};

/// A private Dovecot serving one POP3 mailbox on a loopback port, its mail in a Maildir
/// under the site.
pub struct Dovecot {
    child: std::process::Child,
    /// Its POP3 port.
    pub port: u16,
    /// Its POP3S port (TLS from the first byte), when started with TLS.
    pub tls_port: Option<u16>,
    maildir: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot for user `test` (password `secret`) with an empty mailbox.
    pub fn start(site: &Site) -> Dovecot {
        Dovecot::launch(site, None)
    }

    /// Starts it with TLS from `certificates`: STLS offered on `port`, POP3S on `tls_port`.
    pub fn start_tls(site: &Site, certificates: &Certificates) -> Dovecot {
        Dovecot::launch(site, Some(certificates))
    }

    fn launch(site: &Site, certificates: Option<&Certificates>) -> Dovecot {
        let root = site.path("dovecot");
        let maildir = root.join("home/test/Maildir");
        for folder in ["new", "cur", "tmp"] {
            fs::create_dir_all(maildir.join(folder)).expect("creating the Maildir");
        }
        fs::write(root.join("users"), "test:{PLAIN}secret\n").expect("writing the users file");
        let port = free_port();
        let tls_port = certificates.map(|_| free_port());
        let (ssl, pop3s) = match (certificates, tls_port) {
            (Some(certificates), Some(tls_port)) => (
                format!(
                    "ssl = yes\nssl_cert = <{}\nssl_key = <{}",
                    certificates.cert_file.display(),
                    certificates.key_file.display()
                ),
                format!(
                    "inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {tls_port}\n    ssl = yes\n  }}"
                ),
            ),
            _ => ("ssl = no".to_owned(), String::new()),
        };
        let config = format!(
            r#"protocols = pop3
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  {pop3s}
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
pop3_uidl_format = %08Xu%08Xv
"#,
            root = root.display()
        );
        let config_file = root.join("dovecot.conf");
        fs::write(&config_file, config).expect("writing the Dovecot configuration");
        let chown = Command::new("/bin/chown")
            .args(["-R", "nobody:nogroup"])
            .arg(root.join("home"))
            .status()
            .expect("chown runs");
        assert!(chown.success(), "the mailbox must belong to the mail user");
        let program = real_server("dovecot").expect("the test checked for dovecot");
        let child = Command::new(program)
            .args(["-F", "-c"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot starts");
        wait_until(PROMPTLY, "Dovecot listens", || {
            [Some(port), tls_port]
                .into_iter()
                .flatten()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        Dovecot {
            child,
            port,
            tls_port,
            maildir,
        }
    }

    /// Delivers a message into the mailbox, as the server's own delivery agent would
    /// (written in `tmp`, moved to `new`, owned by the mail user).
    pub fn deliver(&self, name: &str, message: &str) {
        let hidden = self.maildir.join("tmp").join(name);
        fs::write(&hidden, message).expect("writing a message");
        let chown = Command::new("/bin/chown")
            .arg("nobody:nogroup")
            .arg(&hidden)
            .status()
            .expect("chown runs");
        assert!(chown.success());
        fs::rename(&hidden, self.maildir.join("new").join(name))
            .expect("moving the message into new");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        let root = self
            .maildir
            .ancestors()
            .nth(3)
            .expect("the Maildir is <root>/home/test/Maildir");
        fs::read_to_string(root.join("dovecot.log")).unwrap_or_default()
    }

    /// How many messages are still in the mailbox on the server.
    pub fn messages_on_server(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|folder| {
                fs::read_dir(self.maildir.join(folder))
                    .map(|e| e.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
