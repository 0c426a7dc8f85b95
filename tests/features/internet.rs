//! Delivery to the Internet: the SMTP transport in `mode = "mx"`, against a DNS of the
//! test's own (Debian's dnsmasq on a loopback port) whose MX and A records point test
//! domains at `smtp-sink`s on 127.0.0.x addresses.

use spooler_tests::{
    free_port, real_server, wait_until, Dnsmasq, Host, Site, SmtpSink, Zone, PROMPTLY,
};

use crate::common::recipient;

/// A transport `internet` delivering to the exchangers `dns` names, on port `port`, and a
/// retry an hour away (a deferred recipient stays deferred while the test looks at it).
fn mx_profile(dns: &Dnsmasq, port: u16) -> String {
    format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"internet\"\nconfig = {{ mode = \"mx\", resolver = \"127.0.0.1:{}\", mx_port = {port}, helo = \"spooler.test\", timeout_secs = 5 }}\n\
         [retry]\nmin_delay = \"1h\"\nmax_delay = \"1h\"\n",
        dns.port
    )
}

const MESSAGE: &str =
    "From: alice@example.com\r\nSubject: to the exchangers\r\n\r\nHello, Internet.\r\n";

#[test]
fn each_domain_goes_to_its_first_exchanger_that_answers_in_one_transaction() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    // two.test: mx1 (preferred) is down, mx2 takes the mail. bare.test has no MX, only an
    // address: it is its own exchanger.
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .mx("two.test", "mx1.two.test", 10)
            .mx("two.test", "mx2.two.test", 20)
            .address("mx1.two.test", "127.0.0.2")
            .address("mx2.two.test", "127.0.0.3")
            .address("bare.test", "127.0.0.4"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    let mx2 = SmtpSink::start_at(&site, "mx2", "127.0.0.3", port, &[]);
    let bare = SmtpSink::start_at(&site, "bare", "127.0.0.4", port, &[]);
    let host = Host::start(&site.write_config(&mx_profile(&dns, port)), "host.log");
    let id = host.submit(
        &[
            "-f",
            "alice@example.com",
            "bob@two.test",
            "carol@TWO.test",
            "dave@bare.test",
        ],
        MESSAGE,
    );

    wait_until(PROMPTLY, "the message is finished", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let to_two = mx2.transactions();
    assert_eq!(to_two.len(), 1, "one transaction for two.test: {to_two:#?}");
    assert!(
        to_two[0].contains("X-Rcpt-Args: <bob@two.test>")
            && to_two[0].contains("X-Rcpt-Args: <carol@TWO.test>")
            && to_two[0].contains("Hello, Internet."),
        "{}",
        to_two[0]
    );
    let to_bare = bare.transactions();
    assert_eq!(to_bare.len(), 1, "{to_bare:#?}");
    assert!(to_bare[0].contains("X-Rcpt-Args: <dave@bare.test>"));
    let message = host.show(&id);
    for address in [
        "SMTP:bob@two.test",
        "SMTP:carol@TWO.test",
        "SMTP:dave@bare.test",
    ] {
        let status = recipient(&message, address);
        assert_eq!(status["state"], "delivered", "{status}\n{}", dns.log());
        assert_eq!(status["transport"], "internet");
    }
}

#[test]
fn a_null_mx_fails_at_once_and_a_domain_that_does_not_exist_is_deferred() {
    let Some(dns) = Dnsmasq::start(Zone::new().null_mx("nomail.test")) else {
        return;
    };
    let site = Site::new();
    let host = Host::start(
        &site.write_config(&mx_profile(&dns, free_port())),
        "host.log",
    );
    let refused = host.submit(&["-f", "alice@example.com", "bob@nomail.test"], MESSAGE);
    let missing = host.submit(&["-f", "alice@example.com", "carol@nowhere.test"], MESSAGE);

    let report = &host.reports(1)[0];
    assert!(
        report.contains(
            "Final-Recipient: rfc822; bob@nomail.test\r\nAction: failed\r\nStatus: 5.1.10\r\n"
        ),
        "{report}"
    );
    assert!(
        report.contains("null MX (RFC 7505): it accepts no mail"),
        "{report}"
    );
    assert_eq!(
        recipient(&host.show(&refused), "SMTP:bob@nomail.test")["attempts"],
        1,
        "failed at the first attempt"
    );
    wait_until(PROMPTLY, "the other is deferred", || {
        recipient(&host.show(&missing), "SMTP:carol@nowhere.test")["attempts"] == 1
    });
    let status = recipient(&host.show(&missing), "SMTP:carol@nowhere.test").clone();
    assert_eq!(status["state"], "pending", "{status}");
    assert!(
        status["last_answer"]
            .as_str()
            .unwrap()
            .contains("the domain nowhere.test does not exist (NXDOMAIN)"),
        "{status}"
    );
}

#[test]
fn a_domain_whose_exchangers_are_all_down_is_deferred_naming_each() {
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .mx("down.test", "mx1.down.test", 10)
            .mx("down.test", "mx2.down.test", 20)
            .address("mx1.down.test", "127.0.0.5")
            .address("mx2.down.test", "127.0.0.6"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    let host = Host::start(&site.write_config(&mx_profile(&dns, port)), "host.log");
    let id = host.submit(&["-f", "alice@example.com", "bob@down.test"], MESSAGE);

    wait_until(PROMPTLY, "it is deferred", || {
        recipient(&host.show(&id), "SMTP:bob@down.test")["attempts"] == 1
    });
    let status = recipient(&host.show(&id), "SMTP:bob@down.test").clone();
    let answer = status["last_answer"].as_str().unwrap();
    assert_eq!(status["state"], "pending", "{status}");
    assert!(
        answer.contains("no mail exchanger of down.test could be reached: ")
            && answer.contains(&format!("mx1.down.test[127.0.0.5]:{port}"))
            && answer.contains(&format!("mx2.down.test[127.0.0.6]:{port}")),
        "{answer}"
    );
    let status_page = host.command(&["status"]).stdout;
    assert!(
        !status_page.contains("offline"),
        "one domain's trouble does not take the transport offline:\n{status_page}"
    );
}
