//! The SMTP listener driven by real clients: Postfix's `smtp-source` (20,000 messages through
//! the listener and the SMTP transport into `smtp-sink`), lettre (STARTTLS and AUTH), and a
//! plain TCP client for what clients should not do (relaying, dropping mid-DATA, holding
//! sessions) and for the protocol's details.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use spooler_tests::{
    free_port, real_server, wait_until, Certificates, Host, Site, SmallDisk, SmtpClient, SmtpSink,
    PROMPTLY,
};

use crate::common::USERS;

const MESSAGE: &str = "From: app@example.com\r\nTo: bob@example.net\r\nSubject: from an application\r\n\r\nHello over SMTP.\r\n";

/// A profile with a listener on `port` (with `listener` keys added) relaying through the SMTP
/// transport to `sink`, then `extra`.
fn profile(port: u16, listener: &str, sink: u16, extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\n{listener}\n{}{extra}",
        relay(sink)
    )
}

/// The SMTP transport to `sink`, with parallel connections.
fn relay(sink: u16) -> String {
    format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"relay\"\nparallel = 8\n\
         config = {{ host = \"127.0.0.1\", port = {sink}, tls = \"none\", helo = \"spooler.test\", timeout_secs = 10 }}\n"
    )
}

/// A host whose listener (with `listener`'s extra keys, and `extra` in the profile)
/// relays to a fresh smtp-sink: the sink, the host and the listener's port.
fn relaying_host<'site>(
    site: &'site Site,
    listener: &str,
    extra: &str,
) -> (SmtpSink<'site>, Host, u16) {
    let sink = SmtpSink::start(site, "sink", free_port(), &[]);
    let port = free_port();
    let config = profile(port, listener, sink.port, extra);
    let host = Host::start(&site.write_config(&config), "host.log");
    (sink, host, port)
}

/// The queue id in a `250 2.0.0 Ok: queued as ID` reply.
fn queued_id(reply: &str) -> String {
    reply
        .trim()
        .rsplit(' ')
        .next()
        .expect("a reply has words")
        .to_owned()
}

fn stored_nowhere(host: &Host) {
    for folder in ["Outbox", "Sent Items"] {
        let messages = host.list(folder);
        assert!(messages.is_empty(), "{folder}: {messages:#?}");
    }
}

#[test]
fn twenty_thousand_messages_from_smtp_source_are_delivered_once_each() {
    let (Some(source), Some(_)) = (real_server("smtp-source"), real_server("smtp-sink")) else {
        return;
    };
    let site = Site::new();
    let (sink, host, port) = relaying_host(&site, "", "");
    const COUNT: usize = 20_000;
    let started = Instant::now();
    let status = Command::new(source)
        .args([
            "-s",
            "20",
            "-m",
            &COUNT.to_string(),
            "-f",
            "app@example.com",
        ])
        .args(["-t", "bob@example.net"])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .expect("smtp-source runs");
    assert!(status.success(), "smtp-source: {status}");
    let submitted = started.elapsed();
    wait_until(
        Duration::from_secs(120),
        "the sink has every message",
        || sink.transactions_count() >= COUNT,
    );
    let delivered = started.elapsed();
    eprintln!("{COUNT} messages: submitted in {submitted:?}, delivered in {delivered:?}");
    std::thread::sleep(Duration::from_secs(1));
    let transactions = sink.transactions();
    assert_eq!(transactions.len(), COUNT, "nothing delivered twice");
    let ids: BTreeSet<&str> = transactions
        .iter()
        .filter_map(|t| t.lines().find(|l| l.starts_with("Message-Id:")))
        .collect();
    assert_eq!(ids.len(), COUNT, "every message once");
    let first = &transactions[0];
    assert!(first.contains("(spooler-host) with SMTP;"), "{first}");
    wait_until(PROMPTLY, "the Outbox is empty", || {
        host.list("Outbox").is_empty()
    });
}

#[test]
fn lettre_sends_over_starttls_and_implicit_tls_with_auth_and_a_wrong_password_or_none_is_refused() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let certificates = Certificates::issue(&site.path("tls"), &["localhost"]);
    let users = site.path("users");
    std::fs::write(&users, USERS).unwrap();
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let (port, implicit) = (free_port(), free_port());
    // Nobody may send without AUTH, not even from loopback; a second listener speaks TLS from
    // the first byte.
    let tls = format!(
        "tls_certificate = \"{}\"\ntls_key = \"{}\"\nusers_file = \"{}\"\nallowed_networks = []",
        certificates.cert_file.display(),
        certificates.key_file.display(),
        users.display()
    );
    let listener = format!(
        "{tls}\n[[listener]]\naddress = \"127.0.0.1:{implicit}\"\nimplicit_tls = true\n{tls}"
    );
    let host = Host::start(
        &site.write_config(&profile(port, &listener, sink.port, "")),
        "host.log",
    );
    let ca = std::fs::read(&certificates.ca_file).unwrap();
    let connect = |port: u16, wrapper: bool, credentials: Option<(&str, &str)>| {
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(&ca).unwrap())
            .build_rustls()
            .unwrap();
        let tls = if wrapper {
            Tls::Wrapper(tls)
        } else {
            Tls::Required(tls)
        };
        let mut builder = SmtpTransport::builder_dangerous("127.0.0.1")
            .port(port)
            .tls(tls)
            .timeout(Some(PROMPTLY));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user.into(), password.into()));
        }
        builder.build()
    };
    let client = |credentials| connect(port, false, credentials);
    let envelope = Envelope::new(
        Some("app@example.com".parse().unwrap()),
        vec!["bob@example.net".parse().unwrap()],
    )
    .unwrap();

    let sent = client(Some(("app", "secret"))).send_raw(&envelope, MESSAGE.as_bytes());
    let response = sent.expect("accepted over STARTTLS with AUTH");
    assert_eq!(response.code().to_string(), "250");
    wait_until(PROMPTLY, "the message reaches the sink", || {
        sink.transactions_count() == 1
    });
    let transaction = &sink.transactions()[0];
    assert!(transaction.contains("with ESMTPSA"), "{transaction}");
    assert!(transaction.contains("Hello over SMTP."), "{transaction}");

    let wrong = client(Some(("app", "guess"))).send_raw(&envelope, MESSAGE.as_bytes());
    let error = wrong.expect_err("a wrong password is refused").to_string();
    assert!(
        error.contains("535") || error.contains("credentials invalid"),
        "{error}"
    );
    let anonymous = client(None).send_raw(&envelope, MESSAGE.as_bytes());
    let error = anonymous.expect_err("no AUTH, no mail").to_string();
    assert!(
        error.contains("530") || error.contains("authentication required"),
        "{error}"
    );
    assert!(host.log().contains("authentication failed for app"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.transactions_count(),
        1,
        "only the authenticated message"
    );

    let wrapped = connect(implicit, true, Some(("app", "secret")));
    let response = wrapped.send_raw(&envelope, MESSAGE.as_bytes());
    assert_eq!(response.expect("implicit TLS").code().to_string(), "250");
    wait_until(PROMPTLY, "the second message reaches the sink", || {
        sink.transactions_count() == 2
    });

    // STARTTLS is offered in clear text; AUTH over clear text from loopback is allowed.
    let (mut plain, ehlo) = SmtpClient::greeted(port);
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    let login = plain.command("AUTH LOGIN");
    assert_eq!(login, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(plain.command("YXBw"), "334 UGFzc3dvcmQ6\r\n");
    assert!(plain.command("c2VjcmV0").starts_with("235 2.7.0"));
}

#[test]
fn a_message_over_the_size_limit_is_answered_552_and_nothing_is_stored() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let limits = "[limits]\nmax_message_size = \"10K\"\n";
    let (sink, host, port) = relaying_host(&site, "", limits);
    let (mut client, ehlo) = SmtpClient::greeted(port);
    assert!(ehlo.contains("250-SIZE 10240\r\n"), "{ehlo}");
    let declared = client.command("MAIL FROM:<app@example.com> SIZE=20000");
    assert!(declared.starts_with("552 5.3.4"), "{declared}");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(100).repeat(200));
    let reply = client.send_message("app@example.com", "bob@example.net", &big);
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    stored_nowhere(&host);
    // The session goes on.
    let reply = client.send_message("app@example.com", "bob@example.net", MESSAGE);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    wait_until(PROMPTLY, "the small one is delivered", || {
        sink.transactions_count() == 1
    });
}

#[test]
fn clients_outside_the_allowed_networks_cannot_relay() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let (open, with_users) = (free_port(), free_port());
    let users = site.path("users");
    std::fs::write(&users, USERS).unwrap();
    // Loopback is outside these networks.
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{open}\"\n\
         allowed_networks = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n\
         [[listener]]\naddress = \"127.0.0.1:{with_users}\"\n\
         allowed_networks = [\"192.0.2.0/24\"]\nusers_file = \"{}\"\n{}",
        users.display(),
        relay(sink.port)
    );
    let host = Host::start(&site.write_config(&config), "host.log");
    let (mut client, _) = SmtpClient::greeted(open);
    let refused = client.command("MAIL FROM:<app@example.com>");
    assert!(refused.starts_with("554 5.7.1"), "{refused}");
    assert!(refused.contains("127.0.0.1"), "{refused}");
    let rcpt = client.command("RCPT TO:<bob@example.net>");
    assert!(rcpt.starts_with("503"), "{rcpt}");
    let data = client.command("DATA");
    assert!(data.starts_with("503"), "{data}");
    client.send(MESSAGE);
    client.command(".");

    let (mut client, _) = SmtpClient::greeted(with_users);
    let refused = client.command("MAIL FROM:<app@example.com>");
    assert!(refused.starts_with("530 5.7.0"), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    stored_nowhere(&host);
    assert_eq!(sink.transactions_count(), 0);
}

#[test]
fn a_client_that_drops_mid_data_leaves_nothing_stored() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let (sink, host, port) = relaying_host(&site, "", "");
    let (mut client, _) = SmtpClient::greeted(port);
    client.start_data("app@example.com", "bob@example.net");
    client.send("Subject: half\r\n\r\nthe first half of the messa");
    drop(client);
    wait_until(PROMPTLY, "the host notices", || {
        host.log().contains("went away during DATA")
    });
    stored_nowhere(&host);
    assert_eq!(sink.transactions_count(), 0);
}

#[test]
fn pipelined_commands_are_answered_in_order_with_dsn_and_domain_types() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let listener = "domain_types = { \"localhost\" = \"LOCAL\" }\nhostname = \"mx.spooler.test\"";
    let (_sink, host, port) = relaying_host(&site, listener, "");
    let (mut client, greeting) = SmtpClient::connect(port);
    assert_eq!(greeting, "220 mx.spooler.test ESMTP spooler-host\r\n");
    let ehlo = client.command("EHLO client.example");
    for capability in [
        "250-mx.spooler.test",
        "250-PIPELINING",
        "250-SIZE 52428800",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250 DSN",
    ] {
        assert!(ehlo.contains(capability), "{capability}: {ehlo}");
    }
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(client
        .command("MAIL FROM:<app@example.com>")
        .starts_with("250 2.1.0"));
    assert!(client
        .command("MAIL FROM:<app@example.com>")
        .starts_with("503 5.5.1"));
    assert!(client.command("RSET").starts_with("250 2.0.0"));

    // One write: the whole transaction, as a pipelining client sends it.
    client.send(
        "MAIL FROM:<app@example.com> BODY=8BITMIME RET=HDRS ENVID=order-7\r\n\
         RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.net\r\n\
         RCPT TO:<not an address>\r\n\
         RCPT TO:<alice@LOCALHOST>\r\n\
         DATA\r\n",
    );
    let replies: Vec<String> = (0..5).map(|_| client.reply()).collect();
    assert!(replies[0].starts_with("250 2.1.0"), "{replies:?}");
    assert!(replies[1].starts_with("250 2.1.5"), "{replies:?}");
    assert!(replies[2].starts_with("553 5.1.3"), "{replies:?}");
    assert!(replies[3].starts_with("250 2.1.5"), "{replies:?}");
    assert!(replies[4].starts_with("354"), "{replies:?}");
    client.send("Subject: pipelined\r\n\r\n..a dotted line\r\nbare LF line\n");
    let done = client.command(".");
    assert!(done.starts_with("250 2.0.0 Ok: queued as "), "{done}");
    let id = queued_id(&done);

    let message = host.show(&id);
    let addresses: Vec<&str> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["SMTP:bob@example.net", "LOCAL:alice"]);
    let content = message["content"].as_str().unwrap();
    assert!(
        content.starts_with("Received: from client.example ([127.0.0.1])\r\n\tby mx.spooler.test (spooler-host) with ESMTP;"),
        "{content}"
    );
    assert!(content.contains("\r\nMessage-ID: <") && content.contains("\r\nDate: "));
    assert!(
        content.ends_with("\r\n\r\n.a dotted line\r\nbare LF line\r\n"),
        "{content:?}"
    );
    // NOTIFY=SUCCESS: a delivery report reaches the sender's Inbox (beside alice's copy).
    wait_until(PROMPTLY, "a delivery report", || {
        host.contents("Inbox")
            .iter()
            .any(|m| m.contains("multipart/report"))
    });

    for (command, expected) in [
        ("VRFY bob", "252 2.5.2"),
        ("NOOP", "250 2.0.0"),
        ("HELP", "214 2.0.0"),
        ("BDAT 10 LAST", "500 5.5.2"),
        ("RCPT TO:<bob@example.net>", "503 5.5.1"),
        ("MAIL FROM:<bob@example.net> SMTPUTF8", "555 5.5.4"),
        ("MAIL FROM:<> NOTIFY=NEVER", "555 5.5.4"),
        ("QUIT", "221 2.0.0"),
    ] {
        let reply = client.command(command);
        assert!(reply.starts_with(expected), "{command}: {reply}");
    }
    assert_eq!(client.reply(), "", "closed after QUIT");
}

#[test]
fn a_client_sending_a_few_bytes_at_a_time_and_commands_after_the_dot_is_served_in_order() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let (sink, host, port) = relaying_host(&site, "", "");
    let (mut client, _) = SmtpClient::greeted(port);
    client.writer().set_nodelay(true).expect("no Nagle");
    let trickle = |client: &mut SmtpClient, text: &str| {
        for piece in text.as_bytes().chunks(3) {
            client.writer().write_all(piece).expect("sending");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    trickle(
        &mut client,
        "MAIL FROM:<app@example.com>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n",
    );
    for expected in ["250 2.1.0", "250 2.1.5", "354"] {
        let reply = client.reply();
        assert!(reply.starts_with(expected), "{expected}: {reply}");
    }
    // The end of the message, a second transaction and QUIT in one go: the second MAIL
    // is read while the first message is being committed, and answered after it.
    trickle(
        &mut client,
        "Subject: slow\r\n\r\n..\r\n.\r\nMAIL FROM:<app@example.com>\r\n\
         RCPT TO:<carol@example.net>\r\nDATA\r\n",
    );
    let first = client.reply();
    assert!(first.starts_with("250 2.0.0 Ok: queued as "), "{first}");
    for expected in ["250 2.1.0", "250 2.1.5", "354"] {
        let reply = client.reply();
        assert!(reply.starts_with(expected), "{expected}: {reply}");
    }
    client.send("Subject: second\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    let second = client.reply();
    assert!(second.starts_with("250 2.0.0 Ok: queued as "), "{second}");
    assert!(client.reply().starts_with("221 2.0.0"));
    let content = host.show(&queued_id(&first))["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        content.ends_with("Subject: slow\r\n\r\n.\r\n"),
        "{content:?}"
    );
    wait_until(PROMPTLY, "both messages reach the sink", || {
        sink.transactions_count() == 2
    });
}

#[test]
fn sessions_beyond_the_bound_get_421_and_idle_ones_time_out() {
    let site = Site::new();
    let port = free_port();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nmax_sessions = 3\ncommand_timeout = \"1s\"\n"
    );
    let _host = Host::start(&site.write_config(&config), "host.log");
    let mut sessions: Vec<SmtpClient> = (0..3)
        .map(|_| {
            let (client, greeting) = SmtpClient::connect(port);
            assert!(greeting.starts_with("220 "), "{greeting}");
            client
        })
        .collect();
    let (_, refused) = SmtpClient::connect(port);
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    assert!(refused.contains("too many sessions"), "{refused}");

    // Idle for longer than the command timeout: told so and closed.
    let timed_out = sessions[0].reply();
    assert!(timed_out.starts_with("421 4.4.2"), "{timed_out}");
    assert_eq!(sessions[0].reply(), "");
    sessions.clear();
    std::thread::sleep(Duration::from_millis(300));
    let (_, greeting) = SmtpClient::connect(port);
    assert!(greeting.starts_with("220 "), "room again: {greeting}");
}

#[test]
fn two_hundred_concurrent_sessions_are_served() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let (sink, _host, port) = relaying_host(&site, "", "");
    const SESSIONS: usize = 200;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let threads: Vec<_> = (0..SESSIONS)
        .map(|n| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let (mut client, _) = SmtpClient::greeted(port);
                // Every session is open at once before any sends.
                barrier.wait();
                let content = format!("Subject: session {n}\r\n\r\nfrom session {n}\r\n");
                let reply = client.send_message("app@example.com", "bob@example.net", &content);
                client.command("QUIT");
                reply
            })
        })
        .collect();
    for thread in threads {
        let reply = thread.join().expect("a session thread");
        assert!(reply.starts_with("250 2.0.0"), "{reply}");
    }
    wait_until(PROMPTLY, "every message reaches the sink", || {
        sink.transactions_count() == SESSIONS
    });
}

#[test]
fn a_full_store_answers_4xx_and_keeps_nothing_half_stored() {
    let site = Site::new();
    let Some(disk) = SmallDisk::mount(&site.path("data"), "8M") else {
        return;
    };
    let port = free_port();
    std::fs::create_dir_all(site.path("files")).unwrap();
    std::fs::write(site.path("files/.offline"), "").unwrap();
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\n\
         [[transport]]\nprovider = \"directory\"\nname = \"files\"\nconfig = {{ path = \"{{site}}/files\", address_type = \"SMTP\" }}\n"
    );
    let host = Host::start(&site.write_config(&config), "host.log");
    let filler = disk.fill();
    let (mut client, _) = SmtpClient::greeted(port);
    let line = format!("{}\r\n", "x".repeat(998));
    let big = format!("Subject: too much\r\n\r\n{}", line.repeat(1000));
    let reply = client.send_message("app@example.com", "bob@example.net", &big);
    assert!(reply.starts_with("45"), "a temporary failure: {reply}");
    assert!(reply.contains("try again"), "{reply}");
    // Space comes back: the same message goes through.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + PROMPTLY;
    let reply = loop {
        let reply = client.send_message("app@example.com", "bob@example.net", &big);
        if reply.starts_with("250") || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let outbox = host.list("Outbox");
    assert_eq!(outbox.len(), 1, "nothing half-stored: {outbox:#?}");
}
