//! The SMTP transport against a real SMTP server on loopback: Postfix's `smtp-sink`, which
//! takes mail, or refuses chosen commands with the replies we give it; and against none, a
//! smart host that is down.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spooler_tests::{free_port, real_server, wait_until, Host, Postfix, Site, SmtpSink, PROMPTLY};

use crate::common::recipient;

fn smtp_transport(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"{name}\"\nconfig = {{ host = \"127.0.0.1\", port = {port}, tls = \"none\", helo = \"spooler.test\", timeout_secs = 5{extra} }}\n"
    )
}

const RETRY_LATER: &str = "[retry]\nmin_delay = \"1h\"\nmax_delay = \"1h\"\n";

const MESSAGE: &str = "From: alice@example.com\r\nTo: bob@example.net, carol@example.net\r\nSubject: to the smart host\r\n\r\nHello over SMTP.\r\n";

#[test]
fn mail_goes_to_the_smart_host_in_one_transaction_per_message_and_a_bcc_in_its_own() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    // With AUTH (smtp-sink offers PLAIN and LOGIN) and two parallel connections.
    let transport = smtp_transport(
        "relay",
        sink.port,
        ", username = \"spooler\", password = \"secret\"",
    )
    .replace("name = \"relay\"", "name = \"relay\"\nparallel = 2");
    let host = Host::start(&site.write_config(&transport), "host.log");
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@example.net",
            "carol@example.net",
            "--bcc",
            "dave@example.net",
            "LOCAL:erin",
        ],
        MESSAGE,
    );

    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let transactions = sink.transactions();
    assert_eq!(transactions.len(), 2, "{transactions:#?}");
    let open = transactions
        .iter()
        .find(|t| t.contains("<bob@example.net>"))
        .expect("the To transaction");
    assert!(open.contains("X-Mail-Args: <alice@example.com>"), "{open}");
    assert!(
        open.contains("X-Rcpt-Args: <carol@example.net>") && !open.contains("dave"),
        "{open}"
    );
    assert!(open.contains("Hello over SMTP."));
    let bcc = transactions
        .iter()
        .find(|t| t.contains("<dave@example.net>"))
        .expect("the Bcc transaction");
    assert!(
        !bcc.contains("bob@example.net>\n") && !bcc.contains("X-Rcpt-Args: <bob"),
        "{bcc}"
    );
    let message = host.show(&id);
    for address in [
        "SMTP:bob@example.net",
        "SMTP:carol@example.net",
        "SMTP:dave@example.net",
    ] {
        let status = recipient(&message, address);
        assert_eq!(status["state"], "delivered", "{status}");
        assert!(
            status["last_answer"].as_str().unwrap().starts_with("250"),
            "{status}"
        );
    }
    assert_eq!(recipient(&message, "LOCAL:erin")["transport"], "embedded");
}

#[test]
fn a_5xx_for_one_recipient_gives_a_report_with_the_servers_text_while_the_others_are_delivered() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let strict = SmtpSink::start(
        &site,
        "strict",
        free_port(),
        &[
            "-f",
            "RCPT",
            "-B",
            "550 5.1.1 <ghost@unknown.example>: Recipient address rejected: User unknown",
        ],
    );
    let relay = SmtpSink::start(&site, "relay", free_port(), &[]);
    let config = format!(
        "{}{}",
        smtp_transport("strict", strict.port, ", domains = [\"unknown.example\"]"),
        smtp_transport("relay", relay.port, "")
    );
    let host = Host::start(&site.write_config(&config), "host.log");
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@example.net",
            "ghost@unknown.example",
        ],
        MESSAGE,
    );

    let report = &host.reports(1)[0];
    assert!(
        report.contains(
            "Final-Recipient: rfc822; ghost@unknown.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ),
        "{report}"
    );
    assert!(report.contains("Diagnostic-Code: smtp; 550 5.1.1 <ghost@unknown.example>: Recipient address rejected: User unknown"), "{report}");
    assert!(
        !report.contains("Final-Recipient: rfc822; bob@example.net"),
        "{report}"
    );
    let message = host.show(&id);
    assert_eq!(
        recipient(&message, "SMTP:bob@example.net")["state"],
        "delivered"
    );
    assert_eq!(
        recipient(&message, "SMTP:bob@example.net")["transport"],
        "relay"
    );
    assert_eq!(
        recipient(&message, "SMTP:ghost@unknown.example")["state"],
        "failed"
    );
    assert_eq!(relay.transactions().len(), 1);
    assert!(
        strict.transactions().is_empty(),
        "nothing was accepted there"
    );
}

/// A host whose transport `relay` sends to a port on loopback where nothing listens (yet),
/// retrying only after an hour: the port and the host.
fn with_the_smart_host_down(site: &Site) -> (u16, Host) {
    let port = free_port();
    let config = format!("{}{RETRY_LATER}", smtp_transport("relay", port, ""));
    (port, Host::start(&site.write_config(&config), "host.log"))
}

/// Now, as `status --json` writes its times: milliseconds since the epoch.
fn milliseconds_now() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

/// `relay`'s line in `status`.
fn relay_status(host: &Host) -> String {
    let status = host.command(&["status"]).stdout;
    status
        .lines()
        .find(|line| line.starts_with("relay "))
        .unwrap_or_else(|| panic!("no line for relay in:\n{status}"))
        .to_owned()
}

#[test]
fn with_the_server_down_mail_is_deferred_and_a_flush_delivers_it_once_it_is_up() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let (port, host) = with_the_smart_host_down(&site);
    let id = host.submit(&["bob@example.net"], MESSAGE);

    wait_until(PROMPTLY, "the attempt is deferred", || {
        recipient(&host.show(&id), "SMTP:bob@example.net")["attempts"] == 1
    });
    let status = recipient(&host.show(&id), "SMTP:bob@example.net").clone();
    assert_eq!(status["state"], "pending");
    assert!(
        status["last_answer"]
            .as_str()
            .unwrap()
            .contains(&format!("cannot talk to 127.0.0.1:{port}")),
        "{status}"
    );
    assert!(
        status["last_answer"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{status}"
    );

    // Up, but closing with 421 at RCPT: still deferred, not failed. The transport's probe
    // finds it listening and sends the mail.
    let closing = SmtpSink::start(&site, "closing", port, &["-Q", "RCPT"]);
    wait_until(PROMPTLY, "the 421 is a deferral", || {
        recipient(&host.show(&id), "SMTP:bob@example.net")["attempts"] == 2
    });
    let status = recipient(&host.show(&id), "SMTP:bob@example.net").clone();
    assert_eq!(status["state"], "pending", "{status}");
    assert!(
        status["last_answer"].as_str().unwrap().contains("421"),
        "{status}"
    );
    drop(closing);

    let sink = SmtpSink::start(&site, "sink", port, &[]);
    assert_eq!(host.command(&["flush", "relay"]).code, Some(0));
    wait_until(PROMPTLY, "the flush delivers it", || {
        sink.transactions().len() == 1
    });
    wait_until(PROMPTLY, "it is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    assert!(host.list("Inbox").is_empty(), "a deferral is not a failure");
}

#[test]
fn a_server_refusing_one_recipient_of_a_transaction_fails_only_that_one() {
    if real_server("smtp-sink").is_none() || real_server("postfix").is_none() {
        return;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: a private Postfix needs root to start (CI runs as root)");
        return;
    }
    let site = Site::new();
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let postfix = Postfix::start(
        &site,
        sink.port,
        &[("ghost@example.net", "550 5.1.1 User unknown")],
    );
    let host = Host::start(
        &site.write_config(&smtp_transport("smarthost", postfix.port, "")),
        "host.log",
    );
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@example.net",
            "ghost@example.net",
        ],
        MESSAGE,
    );

    let report = &host.reports(1)[0];
    assert!(
        report.contains(
            "Final-Recipient: rfc822; ghost@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ),
        "{report}"
    );
    assert!(report.contains("Diagnostic-Code: smtp; 550 5.1.1 <ghost@example.net>: Recipient address rejected: User unknown"), "{report}");
    let message = host.show(&id);
    assert_eq!(
        recipient(&message, "SMTP:bob@example.net")["state"],
        "delivered"
    );
    assert_eq!(
        recipient(&message, "SMTP:ghost@example.net")["state"],
        "failed"
    );
    wait_until(PROMPTLY, "Postfix relays bob's copy to the sink", || {
        sink.transactions().len() == 1
    });
    let relayed = &sink.transactions()[0];
    assert!(
        relayed.contains("X-Rcpt-Args: <bob@example.net>") && !relayed.contains("ghost"),
        "{relayed}"
    );
}

#[test]
fn a_smart_host_that_does_not_offer_pipelining_gets_one_command_at_a_time() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    // `-p`: no PIPELINING in its EHLO reply, so the transport waits for each reply.
    let sink = SmtpSink::start(&site, "sink", free_port(), &["-p"]);
    let host = Host::start(
        &site.write_config(&smtp_transport("smarthost", sink.port, "")),
        "host.log",
    );
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@example.net",
            "carol@example.net",
        ],
        MESSAGE,
    );
    wait_until(PROMPTLY, "the message is delivered", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let transactions = sink.transactions();
    assert_eq!(transactions.len(), 1, "{transactions:#?}");
    for rcpt in [
        "X-Rcpt-Args: <bob@example.net>",
        "X-Rcpt-Args: <carol@example.net>",
    ] {
        assert!(transactions[0].contains(rcpt), "{}", transactions[0]);
    }
    assert!(transactions[0].contains("Hello over SMTP."));
}

#[test]
fn a_smart_host_that_refuses_connections_is_offline_and_its_mail_leaves_as_soon_as_it_listens() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let started = milliseconds_now();
    let (port, host) = with_the_smart_host_down(&site);
    let ids = [
        host.submit(&["bob@example.net"], MESSAGE),
        host.submit(&["carol@example.net"], MESSAGE),
    ];

    wait_until(PROMPTLY, "both recipients wait", || {
        ids.iter().all(|id| {
            let status = host.show(id)["recipients"][0].clone();
            !status["last_answer"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        })
    });
    let line = relay_status(&host);
    let cannot_connect = format!("cannot connect to 127.0.0.1:{port}: ");
    assert!(line.contains(" offline since "), "{line}");
    assert!(line.contains(" UTC  2 queued  "), "{line}");
    assert!(line.contains(&cannot_connect), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
    let json = host.command(&["status", "--json"]).stdout;
    let relay: serde_json::Value = json
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|row| row["name"] == "relay")
        .unwrap_or_else(|| panic!("no relay in:\n{json}"));
    assert_eq!(relay["state"], "offline", "{relay}");
    assert!(
        relay["text"].as_str().unwrap().starts_with(&cannot_connect),
        "{relay}"
    );
    let since = relay["since"].as_i64().expect("since, in milliseconds");
    assert!((started..=milliseconds_now()).contains(&since), "{relay}");

    // The retry timer says an hour from now: only the probe can send the mail, and nobody
    // flushes. It tries 5 s after the transport went offline, then 10 s after that.
    let sink = SmtpSink::start(&site, "sink", port, &[]);
    let up = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "both messages reach the smart host",
        || sink.transactions().len() == 2,
    );
    let waited = up.elapsed();
    for id in &ids {
        wait_until(PROMPTLY, "the message is finished", || {
            host.show(id)["folder"] == "Sent Items"
        });
    }
    let line = relay_status(&host);
    assert!(
        line.contains(" online  0 queued") && !line.contains("since"),
        "{line}"
    );

    // One line for the outage and one for its end, not one per message.
    let log = host.log();
    let count = |words: &str| log.lines().filter(|line| line.contains(words)).count();
    assert_eq!(count("relay: offline: cannot connect to"), 1, "{log}");
    assert_eq!(count("relay: back online"), 1, "{log}");
    eprintln!("delivered {waited:?} after the smart host came up");
}
