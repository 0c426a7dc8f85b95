//! The SMTP transport against a real SMTP server on loopback: Postfix's `smtp-sink`, which
//! takes mail, or refuses chosen commands with the replies we give it.

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

#[test]
fn with_the_server_down_mail_is_deferred_and_a_flush_delivers_it_once_it_is_up() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let site = Site::new();
    let port = free_port();
    let host = Host::start(
        &site.write_config(&format!(
            "{}{RETRY_LATER}",
            smtp_transport("relay", port, "")
        )),
        "host.log",
    );
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

    // Up, but closing with 421 at RCPT: still deferred, not failed.
    let closing = SmtpSink::start(&site, "closing", port, &["-Q", "RCPT"]);
    assert_eq!(host.command(&["flush", "relay"]).code, Some(0));
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
