//! TLS against real servers on loopback, with a private CA the test makes: a private
//! Postfix `smtpd` (STARTTLS, and SMTPS on a second port) for the SMTP transport, a private
//! Dovecot (STLS, and POP3S) for the POP3 transport. The certificate is verified: trusted
//! through `ca_file`, refused without it or when it is issued for another name, and the
//! refusal says so; mail is kept, not lost.

use std::path::PathBuf;

use spooler_tests::{
    free_port, wait_until, Certificates, Dovecot, Host, Postfix, Site, SmtpSink, PROMPTLY,
};

use crate::common::{can_run_dovecot, can_run_postfix, recipient};

const MESSAGE: &str = "From: alice@example.com\r\nTo: bob@starttls.example\r\nSubject: over TLS\r\n\r\nHello over TLS.\r\n";

const INBOUND: &str = "From: carol@example.org\r\nTo: test@example.com\r\nSubject: by POP3 over TLS\r\n\r\nHello from the mail server.\r\n";

const RETRY_LATER: &str = "[retry]\nmin_delay = \"1h\"\nmax_delay = \"1h\"\n";

/// An SMTP transport for the recipients in `domain`; `extra` adds config keys.
fn smtp_transport(name: &str, domain: &str, port: u16, extra: &str) -> String {
    format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"{name}\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, helo = \"spooler.test\", timeout_secs = 5, domains = [\"{domain}\"]{extra} }}\n"
    )
}

fn pop3_transport(port: u16, extra: &str) -> String {
    format!(
        "[[transport]]\nprovider = \"pop3\"\nname = \"mailbox\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, username = \"test\", poll_interval_secs = 1{extra} }}\n"
    )
}

fn ca_file(certificates: &Certificates) -> String {
    format!(", ca_file = \"{}\"", certificates.ca_file.display())
}

fn answer(message: &serde_json::Value, address: &str) -> String {
    recipient(message, address)["last_answer"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn mail_goes_over_starttls_and_implicit_tls_to_a_postfix_whose_ca_is_in_ca_file() {
    if !can_run_postfix() {
        return;
    }
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("tls"), &["localhost", "127.0.0.1"]);
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let postfix = Postfix::start_tls(&site, sink.port, &certificates);
    let implicit_port = postfix.tls_port.expect("started with TLS");
    let config = format!(
        "{}{}",
        smtp_transport(
            "starttls",
            "starttls.example",
            postfix.port,
            &format!(", tls = \"starttls\"{}", ca_file(&certificates))
        ),
        smtp_transport(
            "implicit",
            "implicit.example",
            implicit_port,
            &format!(", tls = \"implicit\"{}", ca_file(&certificates))
        ),
    );
    let host = Host::start(&site.write_config(&config), "host.log");
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@starttls.example",
            "carol@implicit.example",
        ],
        MESSAGE,
    );

    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let message = host.show(&id);
    for (address, transport) in [
        ("SMTP:bob@starttls.example", "starttls"),
        ("SMTP:carol@implicit.example", "implicit"),
    ] {
        let status = recipient(&message, address);
        assert_eq!(status["state"], "delivered", "{status}");
        assert_eq!(status["transport"], transport, "{status}");
        assert!(answer(&message, address).starts_with("250"), "{status}");
    }
    wait_until(PROMPTLY, "Postfix relays both copies to the sink", || {
        sink.transactions().len() == 2
    });
    let log = postfix.log();
    assert_eq!(
        log.matches("TLS connection established from").count(),
        2,
        "both connections were TLS:\n{log}"
    );
}

#[test]
fn an_untrusted_certificate_or_one_for_another_name_is_refused_and_the_mail_is_kept() {
    if !can_run_postfix() {
        return;
    }
    let site = Site::new();
    // Issued for `localhost` only, while the transports connect to 127.0.0.1.
    let certificates = Certificates::issue(&site.path("tls"), &["localhost"]);
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let postfix = Postfix::start_tls(&site, sink.port, &certificates);
    let implicit_port = postfix.tls_port.expect("started with TLS");
    let config = format!(
        "{}{}{RETRY_LATER}",
        // No ca_file: the private CA is not among the public roots.
        smtp_transport(
            "untrusted",
            "starttls.example",
            postfix.port,
            ", tls = \"starttls\""
        ),
        smtp_transport(
            "wrongname",
            "implicit.example",
            implicit_port,
            &format!(", tls = \"implicit\"{}", ca_file(&certificates))
        ),
    );
    let host = Host::start(&site.write_config(&config), "host.log");
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@starttls.example",
            "carol@implicit.example",
        ],
        MESSAGE,
    );

    wait_until(PROMPTLY, "both recipients were tried", || {
        let message = host.show(&id);
        ["SMTP:bob@starttls.example", "SMTP:carol@implicit.example"]
            .iter()
            .all(|address| recipient(&message, address)["attempts"] == 1)
    });
    let message = host.show(&id);
    let untrusted = answer(&message, "SMTP:bob@starttls.example");
    assert!(
        untrusted.contains(&format!("certificate of 127.0.0.1:{}", postfix.port))
            && untrusted.contains("not trusted")
            && untrusted.contains("set `ca_file`"),
        "{untrusted}"
    );
    let wrong_name = answer(&message, "SMTP:carol@implicit.example");
    assert!(
        wrong_name.contains(&format!("certificate of 127.0.0.1:{implicit_port}"))
            && wrong_name.contains("does not match the name")
            && wrong_name.contains("127.0.0.1")
            && wrong_name.contains("localhost"),
        "{wrong_name}"
    );
    for address in ["SMTP:bob@starttls.example", "SMTP:carol@implicit.example"] {
        assert_eq!(recipient(&message, address)["state"], "pending", "kept");
    }
    assert_eq!(message["folder"], "Outbox", "{message}");
    let log = host.log();
    assert!(
        log.contains("untrusted: the TLS certificate of 127.0.0.1") && log.contains("not trusted"),
        "the log says why:\n{log}"
    );
    assert!(
        log.contains("wrongname: the TLS certificate of 127.0.0.1"),
        "{log}"
    );
    assert!(host.list("Inbox").is_empty(), "a deferral, not a failure");
    assert!(sink.transactions().is_empty(), "nothing went through");
}

#[test]
fn pop3_over_stls_with_a_password_file_fetches_into_the_inbox() {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("tls"), &["localhost", "127.0.0.1"]);
    let dovecot = Dovecot::start_tls(&site, &certificates);
    let password_file: PathBuf = site.path("pop3-password");
    std::fs::write(&password_file, "secret\n").unwrap();
    let transport = pop3_transport(
        dovecot.port,
        &format!(
            ", tls = \"stls\"{}, password_file = \"{}\"",
            ca_file(&certificates),
            password_file.display()
        ),
    );
    fetches_over_tls(&site, &dovecot, &transport);
}

#[test]
fn pop3s_fetches_into_the_inbox() {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("tls"), &["localhost", "127.0.0.1"]);
    let dovecot = Dovecot::start_tls(&site, &certificates);
    let transport = pop3_transport(
        dovecot.tls_port.expect("started with TLS"),
        &format!(
            ", tls = \"implicit\"{}, password = \"secret\"",
            ca_file(&certificates)
        ),
    );
    fetches_over_tls(&site, &dovecot, &transport);
}

#[test]
fn pop3_refuses_an_untrusted_certificate_before_logging_in_and_the_mail_stays() {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("tls"), &["localhost", "127.0.0.1"]);
    let dovecot = Dovecot::start_tls(&site, &certificates);
    let tls_port = dovecot.tls_port.expect("started with TLS");
    // No ca_file: the private CA is not among the public roots.
    let transport = pop3_transport(tls_port, ", tls = \"implicit\", password = \"secret\"");
    let host = Host::start(&site.write_config(&transport), "host.log");
    dovecot.deliver("1.mail", INBOUND);

    let expected = format!("the TLS certificate of 127.0.0.1:{tls_port} is not trusted");
    wait_until(PROMPTLY, "the host says the certificate is refused", || {
        host.log().contains(&expected)
    });
    let log = host.log();
    assert!(log.contains("set `ca_file`"), "says what to do:\n{log}");
    assert_eq!(dovecot.messages_on_server(), 1, "the mail stays");
    assert!(host.list("Inbox").is_empty());
    assert!(
        !dovecot.log().contains("Login: user=<test>"),
        "no login after a refused certificate"
    );
}

#[test]
fn pop3_with_stls_refuses_a_server_that_does_not_offer_it_rather_than_send_the_password_in_plain_text(
) {
    if !can_run_dovecot() {
        return;
    }
    let site = Site::new();
    // Started without TLS.
    let dovecot = Dovecot::start(&site);
    let transport = pop3_transport(dovecot.port, ", tls = \"stls\", password = \"secret\"");
    let host = Host::start(&site.write_config(&transport), "host.log");
    dovecot.deliver("1.mail", INBOUND);

    wait_until(PROMPTLY, "the host says STLS is missing", || {
        host.log().contains("the server does not offer STLS")
    });
    assert_eq!(dovecot.messages_on_server(), 1, "the mail stays");
    assert!(host.list("Inbox").is_empty());
    assert!(
        !dovecot.log().contains("Login: user=<test>"),
        "no login in plain text"
    );
}

/// Runs a host with `transport` and checks that mail dropped on `dovecot` lands in the Inbox,
/// leaves the server, and that Dovecot saw the login over TLS.
fn fetches_over_tls(site: &Site, dovecot: &Dovecot, transport: &str) {
    let host = Host::start(&site.write_config(transport), "host.log");
    dovecot.deliver("1.mail", INBOUND);

    wait_until(PROMPTLY, "the message is in the Inbox", || {
        host.list("Inbox").len() == 1
    });
    assert_eq!(host.contents("Inbox"), vec![INBOUND.to_owned()]);
    wait_until(PROMPTLY, "it leaves the server", || {
        dovecot.messages_on_server() == 0
    });
    let log = dovecot.log();
    assert!(
        log.lines()
            .any(|line| line.contains("Login: user=<test>") && line.contains(", TLS")),
        "logged in over TLS:\n{log}"
    );
}
