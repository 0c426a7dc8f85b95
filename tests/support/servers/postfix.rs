//! A private Postfix relaying to a test's sink, rejecting chosen recipients, optionally
//! with STARTTLS and SMTPS.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{free_port, wait_until, Certificates, Site, PROMPTLY};

/// A private Postfix on a loopback port that rejects chosen recipients at RCPT (with
/// `check_recipient_access`) and relays everything else to `relay_port`.
pub struct Postfix {
    config: PathBuf,
    /// Its SMTP port.
    pub port: u16,
    /// Its SMTPS port (TLS from the first byte), when started with TLS.
    pub tls_port: Option<u16>,
}

impl Postfix {
    /// Starts it; `rejects` are `(address, "550 5.1.1 User unknown")` pairs.
    pub fn start(site: &Site, relay_port: u16, rejects: &[(&str, &str)]) -> Postfix {
        Postfix::launch(site, relay_port, rejects, None)
    }

    /// Starts it with TLS from `certificates`: STARTTLS offered on `port`, and SMTPS
    /// (`smtpd_tls_wrappermode`) on `tls_port`.
    pub fn start_tls(site: &Site, relay_port: u16, certificates: &Certificates) -> Postfix {
        Postfix::launch(site, relay_port, &[], Some(certificates))
    }

    fn launch(
        site: &Site,
        relay_port: u16,
        rejects: &[(&str, &str)],
        certificates: Option<&Certificates>,
    ) -> Postfix {
        let root = site.path("postfix");
        let (config, queue, data) = (root.join("conf"), root.join("queue"), root.join("data"));
        for folder in [&config, &queue, &data] {
            fs::create_dir_all(folder).expect("creating Postfix's folders");
        }
        let port = free_port();
        let tls_port = certificates.map(|_| free_port());
        let master = fs::read_to_string("/usr/share/postfix/master.cf.dist")
            .expect("Postfix's master.cf template");
        // Our own smtpd port, and no chroot (the queue is in a test folder).
        let master: String = master
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with("smtp ") && fields.get(1) == Some(&"inet") {
                    format!("127.0.0.1:{port} inet n - n - - smtpd")
                } else if fields.len() >= 8
                    && !line.starts_with('#')
                    && !line.starts_with(' ')
                    && fields[4] == "y"
                {
                    let mut fields = fields;
                    fields[4] = "n";
                    fields.join(" ")
                } else {
                    line.to_owned()
                }
            })
            .map(|line| line + "\n")
            .collect();
        let master = match tls_port {
            Some(tls_port) => format!(
                "{master}127.0.0.1:{tls_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt\n"
            ),
            None => master,
        };
        fs::write(config.join("master.cf"), master).expect("writing master.cf");
        let rejects: Vec<String> = rejects
            .iter()
            .map(|(address, reply)| format!("{address} = {reply}"))
            .collect();
        // An empty inline table is a configuration error that Postfix answers with 451.
        let access = if rejects.is_empty() {
            String::new()
        } else {
            format!(
                "check_recipient_access inline:{{ {{ {} }} }}, ",
                rejects.join(" }, { ")
            )
        };
        let main = format!(
            "compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\nmail_owner = postfix\nsetgid_group = postdrop\n\
             myhostname = relay.spooler-test\nmydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             relayhost = [127.0.0.1]:{relay_port}\nsmtpd_recipient_restrictions = {access}permit_mynetworks, reject\n\
             maillog_file = {root}/maillog\nmaillog_file_prefixes = {root}\nalias_maps =\nalias_database =\n",
            queue = queue.display(),
            data = data.display(),
            root = root.display(),
        );
        let main = match certificates {
            Some(certificates) => format!(
                "{main}smtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\nsmtpd_tls_security_level = may\nsmtpd_tls_loglevel = 1\n",
                certificates.cert_file.display(),
                certificates.key_file.display()
            ),
            None => main,
        };
        fs::write(config.join("main.cf"), main).expect("writing main.cf");
        let postfix = |args: &[&str]| {
            Command::new("/usr/sbin/postfix")
                .arg("-c")
                .arg(&config)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("postfix runs")
        };
        let owned = Command::new("/bin/chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .expect("chown runs");
        assert!(owned.success());
        postfix(&["set-permissions"]);
        assert!(
            postfix(&["start"]).success(),
            "Postfix starts (see {}/maillog)",
            root.display()
        );
        wait_until(PROMPTLY, "Postfix listens", || {
            [Some(port), tls_port]
                .into_iter()
                .flatten()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
        });
        Postfix {
            config,
            port,
            tls_port,
        }
    }

    /// Postfix's own `sendmail`, set to submit to this instance.
    pub fn sendmail(&self) -> Command {
        let mut command = Command::new("/usr/sbin/sendmail");
        command.arg("-C").arg(&self.config);
        command
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.config.with_file_name("maillog")).unwrap_or_default()
    }

    /// How many deliveries its log records as sent.
    pub fn sent(&self) -> usize {
        let log = self.config.with_file_name("maillog");
        fs::read_to_string(log)
            .map(|log| log.lines().filter(|l| l.contains(" status=sent ")).count())
            .unwrap_or(0)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}
