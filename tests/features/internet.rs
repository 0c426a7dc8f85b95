//! Delivery to the Internet: the SMTP transport in `mode = "mx"`, against a DNS of the
//! test's own (Debian's dnsmasq on a loopback port) whose MX and A records point test
//! domains at `smtp-sink`s on 127.0.0.x addresses.

use spooler_tests::{
    free_port, real_server, wait_until, Certificates, Dnsmasq, Host, PolicyServer, Postfix, Site,
    SmtpSink, Zone, PROMPTLY,
};

use crate::common::{can_run_postfix, recipient};

/// A transport `internet` with `parallel` connections delivering to the exchangers `dns`
/// names, on port `port`, and a retry an hour away (a deferred recipient stays deferred
/// while the test looks at it).
fn mx_profile(dns: &Dnsmasq, port: u16, parallel: usize) -> String {
    mx_profile_with(dns, port, parallel, "")
}

/// [`mx_profile`] with `extra` config keys (`, key = value` each).
fn mx_profile_with(dns: &Dnsmasq, port: u16, parallel: usize, extra: &str) -> String {
    format!(
        "[[transport]]\nprovider = \"smtp\"\nname = \"internet\"\nparallel = {parallel}\nconfig = {{ mode = \"mx\", resolver = \"127.0.0.1:{}\", mx_port = {port}, helo = \"spooler.test\", timeout_secs = 5{extra} }}\n\
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
    let host = Host::start(&site.write_config(&mx_profile(&dns, port, 1)), "host.log");
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
        &site.write_config(&mx_profile(&dns, free_port(), 1)),
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
    let words = report.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("Why: the domain cannot be found or takes no mail (DNS) (dns-failure)."),
        "the class, for a person: {report}"
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
    assert_eq!(status["class"], "dns-failure", "{status}");
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
    let host = Host::start(&site.write_config(&mx_profile(&dns, port, 1)), "host.log");
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
    assert_eq!(status["class"], "connection-failure", "{status}");
    let shown = host.command(&["show", &id]).stdout;
    assert!(
        shown.contains("[connection-failure] deferred by internet: no mail exchanger"),
        "{shown}"
    );
    let status_page = host.command(&["status"]).stdout;
    assert!(
        !status_page.contains("offline"),
        "one domain's trouble does not take the transport offline:\n{status_page}"
    );
}

/// A key pair made with `openssl genpkey -algorithm <algorithm>` in `folder`: the private
/// key's PEM file, and the `p=` of its DKIM record (base64 of the public key: the whole
/// SubjectPublicKeyInfo for RSA, the bare 32 bytes for Ed25519, RFC 8463).
fn dkim_key(folder: &std::path::Path, algorithm: &str) -> (std::path::PathBuf, String) {
    let pem = folder.join(format!("{algorithm}.pem"));
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(output.status.success(), "openssl {args:?}: {output:?}");
        output.stdout
    };
    let mut generate = vec!["genpkey", "-algorithm", algorithm, "-out"];
    let pem_text = pem.to_str().unwrap();
    generate.push(pem_text);
    if algorithm == "RSA" {
        generate.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
    }
    openssl(&generate);
    let public = openssl(&["pkey", "-in", pem_text, "-pubout", "-outform", "DER"]);
    let public = if algorithm == "ED25519" {
        public[public.len() - 32..].to_vec()
    } else {
        public
    };
    let public_file = folder.join(format!("{algorithm}.pub.der"));
    std::fs::write(&public_file, public).unwrap();
    let encoded = openssl(&["base64", "-A", "-in", public_file.to_str().unwrap()]);
    (pem, String::from_utf8(encoded).unwrap().trim().to_owned())
}

/// The message as `smtp-sink` dumped it, without its `X-` lines, with CRLF line ends again.
fn as_received(dump: &str) -> Vec<u8> {
    let start = dump
        .find("X-Rcpt-Args:")
        .and_then(|at| dump[at..].find('\n').map(|end| at + end + 1))
        .expect("a dump");
    let mut lines: Vec<&str> = dump[start..].lines().collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    format!("{}\r\n", lines.join("\r\n")).into_bytes()
}

/// What mail-auth makes of `message`'s DKIM signatures, with the keys in the DNS on `port`.
fn verified_by_mail_auth(message: &[u8], port: u16) -> Vec<String> {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    let mut udp = ConnectionConfig::udp();
    udp.port = port;
    let server = NameServerConfig::new("127.0.0.1".parse().unwrap(), true, vec![udp]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let authenticator = mail_auth::MessageAuthenticator::new(
            ResolverConfig::from_name_servers(vec![server]),
            ResolverOpts::default(),
        )
        .unwrap();
        let parsed = mail_auth::AuthenticatedMessage::parse(message).expect("a message");
        authenticator
            .verify_dkim(&parsed)
            .await
            .iter()
            .map(|output| format!("{:?}", output.result()))
            .collect()
    })
}

/// What python3-dkim (Debian's, an independent implementation) makes of `message`, asking the
/// DNS on `port` for the keys: "pass" or "fail".
fn verified_by_python3_dkim(message: &[u8], port: u16) -> String {
    let script = format!(
        "import sys, dkim, dns.resolver\n\
         r = dns.resolver.Resolver(configure=False)\n\
         r.nameservers = ['127.0.0.1']\n\
         r.port = {port}\n\
         def txt(name, timeout=5):\n\
         \x20   answer = r.resolve(name.decode().rstrip('.'), 'TXT')\n\
         \x20   return b''.join(b''.join(record.strings) for record in answer)\n\
         message = sys.stdin.buffer.read()\n\
         print('pass' if dkim.verify(message, dnsfunc=txt) else 'fail')\n"
    );
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(message).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python3-dkim: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn mail_from_a_domain_with_a_key_leaves_signed_and_two_verifiers_agree() {
    if real_server("smtp-sink").is_none()
        || !std::path::Path::new("/usr/lib/python3/dist-packages/dkim").exists()
    {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "python3-dkim is missing (.ci/run installs it)"
        );
        return;
    }
    let site = Site::new();
    let (rsa_pem, rsa_public) = dkim_key(&site.path(""), "RSA");
    let (ed_pem, ed_public) = dkim_key(&site.path(""), "ED25519");
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .exchanger("dest.test", "127.0.0.7")
            .txt(
                "rsa._domainkey.rsa.test",
                &format!("v=DKIM1; k=rsa; p={rsa_public}"),
            )
            .txt(
                "ed._domainkey.ed.test",
                &format!("v=DKIM1; k=ed25519; p={ed_public}"),
            ),
    ) else {
        return;
    };
    let port = free_port();
    let sink = SmtpSink::start_at(&site, "dest", "127.0.0.7", port, &[]);
    let profile = format!(
        "{}[[preprocessor]]\nprovider = \"dkim\"\nconfig = {{ keys = [\n  {{ domain = \"rsa.test\", selector = \"rsa\", key_file = \"{}\" }},\n  {{ domain = \"ed.test\", selector = \"ed\", key_file = \"{}\" }},\n] }}\n",
        mx_profile(&dns, port, 1),
        rsa_pem.display(),
        ed_pem.display()
    );
    let host = Host::start(&site.write_config(&profile), "host.log");
    for from in ["alice@rsa.test", "bob@ed.test", "carol@unsigned.test"] {
        let message = format!(
            "From: {from}\r\nTo: dave@dest.test\r\nSubject: signed by {from}\r\nMessage-ID: <{from}>\r\n\r\nA body,  with  spaces \r\nand two lines.\r\n"
        );
        host.submit(&["-f", from, "dave@dest.test"], &message);
    }
    wait_until(PROMPTLY, "three messages arrive", || {
        sink.transactions_count() == 3
    });

    for dump in sink.transactions() {
        let message = as_received(&dump);
        let text = String::from_utf8_lossy(&message).into_owned();
        let by_mail_auth = verified_by_mail_auth(&message, dns.port);
        let by_python = verified_by_python3_dkim(&message, dns.port);
        if text.contains("From: carol@unsigned.test") {
            assert!(!text.contains("DKIM-Signature"), "{text}");
            assert!(by_mail_auth.is_empty(), "{by_mail_auth:?}");
            continue;
        }
        let algorithm = if text.contains("From: alice@rsa.test") {
            "a=rsa-sha256"
        } else {
            "a=ed25519-sha256"
        };
        assert!(
            text.starts_with("DKIM-Signature:") || text.contains("\r\nDKIM-Signature:"),
            "{text}"
        );
        assert!(
            text.contains(algorithm) && text.contains("c=relaxed/relaxed"),
            "{text}"
        );
        assert_eq!(
            by_mail_auth,
            ["Pass"],
            "mail-auth on:\n{text}\n{}",
            dns.log()
        );
        assert_eq!(by_python, "pass", "python3-dkim on:\n{text}");
    }
}

/// Submits `count` messages to `domain`, one recipient each, `r<n>@<domain>`; their ids.
fn submit_to(host: &Host, domain: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            host.submit(
                &["-f", "alice@example.com", &format!("r{n}@{domain}")],
                MESSAGE,
            )
        })
        .collect()
}

/// When each of a sink's transactions ended, in order: smtp-sink opens a dump at MAIL and
/// last writes it at the end of DATA, so ask once the host has recorded the deliveries.
fn end_times(sink: &SmtpSink) -> Vec<std::time::SystemTime> {
    let mut times: Vec<_> = sink
        .transactions_with_times()
        .into_iter()
        .map(|(_, time)| time)
        .collect();
    times.sort();
    times
}

/// Whether every one of `ids` (one recipient each, `SMTP:r<n>@<domain>`) is delivered.
fn all_delivered(host: &Host, ids: &[String], domain: &str) -> bool {
    ids.iter().enumerate().all(|(n, id)| {
        recipient(&host.show(id), &format!("SMTP:r{n}@{domain}"))["state"] == "delivered"
    })
}

#[test]
fn a_slow_destination_gets_its_concurrency_and_no_more_while_another_domain_flows() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .exchanger("slow.test", "127.0.0.8")
            .exchanger("fast.test", "127.0.0.9"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    // slow.test waits a second before answering DATA: each transaction takes a second.
    let slow = SmtpSink::start_at(&site, "slow", "127.0.0.8", port, &["-w", "1"]);
    let _fast = SmtpSink::start_at(&site, "fast", "127.0.0.9", port, &[]);
    let profile =
        mx_profile(&dns, port, 6) + "[destinations.domains.\"slow.test\"]\nconcurrency = 2\n";
    let host = Host::start(&site.write_config(&profile), "host.log");
    let to_slow = submit_to(&host, "slow.test", 6);
    let to_fast = submit_to(&host, "fast.test", 6);

    wait_until(PROMPTLY, "fast.test's mail is delivered", || {
        all_delivered(&host, &to_fast, "fast.test")
    });
    assert!(
        !all_delivered(&host, &to_slow, "slow.test"),
        "fast.test's mail did not wait for slow.test's: with 2 of the 6 connections, \
         slow.test needs 3 s"
    );
    wait_until(PROMPTLY, "slow.test's mail is delivered", || {
        all_delivered(&host, &to_slow, "slow.test")
    });
    let times = end_times(&slow);
    assert_eq!(times.len(), 6);
    for three in times.windows(3) {
        let span = three[2].duration_since(three[0]).unwrap_or_default();
        assert!(
            span >= std::time::Duration::from_millis(900),
            "three slow.test transactions ended within {span:?}: more than 2 ran at once \
             ({times:?})"
        );
    }
}

#[test]
fn a_destination_rate_spaces_its_deliveries() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .exchanger("paced.test", "127.0.0.13")
            .exchanger("free.test", "127.0.0.14"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    let paced = SmtpSink::start_at(&site, "paced", "127.0.0.13", port, &[]);
    let _free = SmtpSink::start_at(&site, "free", "127.0.0.14", port, &[]);
    let profile =
        mx_profile(&dns, port, 4) + "[destinations.domains.\"paced.test\"]\nrate = \"5/s\"\n";
    let host = Host::start(&site.write_config(&profile), "host.log");
    let to_paced = submit_to(&host, "paced.test", 6);
    let to_free = submit_to(&host, "free.test", 6);

    wait_until(PROMPTLY, "free.test's mail is delivered", || {
        all_delivered(&host, &to_free, "free.test")
    });
    wait_until(PROMPTLY, "paced.test's mail is delivered", || {
        all_delivered(&host, &to_paced, "paced.test")
    });
    let times = end_times(&paced);
    assert_eq!(times.len(), 6);
    // Five a second: six starts take a second at least, whatever the sink's speed.
    let span = times[5].duration_since(times[0]).unwrap_or_default();
    assert!(
        span >= std::time::Duration::from_millis(900),
        "six paced.test deliveries within {span:?} ({times:?})"
    );
}

#[test]
fn a_destination_that_cannot_be_reached_backs_off_as_a_whole() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .exchanger("down.test", "127.0.0.10")
            .exchanger("busy.test", "127.0.0.12")
            .exchanger("up.test", "127.0.0.11"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    let up = SmtpSink::start_at(&site, "up", "127.0.0.11", port, &[]);
    // down.test refuses connections (nothing listens); busy.test answers 421 to each.
    let _busy = SmtpSink::start_at(&site, "busy", "127.0.0.12", port, &["-Q", "CONNECT"]);
    // One connection at a time for each, so the others wait while the first tries.
    let profile = mx_profile(&dns, port, 1)
        + "[destinations.domains.\"down.test\"]\nconcurrency = 1\n\
           [destinations.domains.\"busy.test\"]\nconcurrency = 1\n";
    let host = Host::start(&site.write_config(&profile), "host.log");
    let to_down = submit_to(&host, "down.test", 4);
    let to_busy = submit_to(&host, "busy.test", 4);
    let other = host.submit(&["-f", "alice@example.com", "bob@up.test"], MESSAGE);

    for (domain, ids, cause) in [
        ("down.test", &to_down, "Connection refused"),
        ("busy.test", &to_busy, "421"),
    ] {
        let answers = || -> Vec<serde_json::Value> {
            ids.iter()
                .enumerate()
                .map(|(n, id)| recipient(&host.show(id), &format!("SMTP:r{n}@{domain}")).clone())
                .collect()
        };
        wait_until(
            PROMPTLY,
            &format!("every {domain} recipient is deferred"),
            || answers().iter().all(|status| status["attempts"] == 1),
        );
        let answers: Vec<String> = answers()
            .iter()
            .map(|status| status["last_answer"].as_str().unwrap().to_owned())
            .collect();
        let tried = format!("deferred by internet: no mail exchanger of {domain}");
        let tried = answers.iter().filter(|a| a.starts_with(&tried)).count();
        let not_tried = answers
            .iter()
            .filter(|a| a.contains("not tried: the destination is backing off until"))
            .count();
        assert_eq!((tried, not_tried), (1, 3), "{answers:#?}");
        assert!(
            answers.iter().all(|a| a.contains(cause)),
            "each says why: {answers:#?}"
        );
        assert!(
            host.log()
                .contains(&format!("internet: destination {domain} backs off until")),
            "{}",
            host.log()
        );
        let status = host.command(&["status"]).stdout;
        assert!(
            status.lines().any(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.starts_with(&[domain, "destination", "internet", "backing", "off"])
                    && line.contains(cause)
            }),
            "status shows it:\n{status}"
        );
        let shape = host.command(&["queue", "--shape"]).stdout;
        assert!(
            shape
                .lines()
                .any(|line| line.trim_start().starts_with(domain)
                    && line.contains("backing off until")),
            "queue --shape marks it:\n{shape}"
        );
    }
    wait_until(PROMPTLY, "up.test's mail goes on", || {
        recipient(&host.show(&other), "SMTP:bob@up.test")["state"] == "delivered"
    });
    assert_eq!(up.transactions_count(), 1);

    // down.test comes up: a flush tries it at once, backoff or not (as Postfix's does).
    let down = SmtpSink::start_at(&site, "down", "127.0.0.10", port, &[]);
    host.command(&["flush"]);
    wait_until(PROMPTLY, "down.test's mail goes after the flush", || {
        to_down.iter().enumerate().all(|(n, id)| {
            recipient(&host.show(id), &format!("SMTP:r{n}@down.test"))["state"] == "delivered"
        })
    });
    assert_eq!(down.transactions_count(), 4);
    assert!(
        host.log()
            .contains("flush: 2 destination(s) backing off are tried again"),
        "{}",
        host.log()
    );
}

/// A policy file (`mta-sts.txt`) in `mode` for the exchanger `mx`.
fn sts_policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

#[test]
fn mta_sts_enforce_sends_only_over_verified_tls_to_the_exchangers_it_names() {
    if !can_run_postfix() {
        return;
    }
    // Every exchanger is one Postfix with STARTTLS, whose certificate (from the test's CA) is
    // issued for mx.good.test only. Each domain publishes a policy from a server of its own:
    // good.test enforce (its exchanger matches and verifies), bad.test enforce (the
    // certificate is for another name), testing.test testing (the same mismatch, only
    // logged), stray.test enforce naming an exchanger its MX record is not.
    let domains = [
        (
            "good.test",
            "127.0.0.2",
            sts_policy("enforce", "mx.good.test"),
        ),
        (
            "bad.test",
            "127.0.0.3",
            sts_policy("enforce", "mx.bad.test"),
        ),
        (
            "testing.test",
            "127.0.0.4",
            sts_policy("testing", "mx.testing.test"),
        ),
        (
            "stray.test",
            "127.0.0.5",
            sts_policy("enforce", "*.elsewhere.test"),
        ),
    ];
    let mut zone = Zone::new();
    for (domain, policy_ip, _) in &domains {
        zone = zone
            .exchanger(domain, "127.0.0.1")
            .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=20261208;")
            .address(&format!("mta-sts.{domain}"), policy_ip);
    }
    // unserved.test announces a policy that nobody serves (nothing listens at 127.0.0.6).
    let zone = zone
        .exchanger("unserved.test", "127.0.0.1")
        .txt("_mta-sts.unserved.test", "v=STSv1; id=1;")
        .address("mta-sts.unserved.test", "127.0.0.6");
    let Some(dns) = Dnsmasq::start(zone) else {
        return;
    };
    let site = Site::new();
    let mut names = vec!["mx.good.test".to_owned()];
    names.extend(
        domains
            .iter()
            .map(|(domain, ..)| format!("mta-sts.{domain}")),
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let certificates = Certificates::issue(&site.path("tls"), &names);
    let sink = SmtpSink::start(&site, "sink", free_port(), &[]);
    let postfix = Postfix::start_tls(&site, sink.port, &certificates);
    let policy_port = free_port();
    let mut servers = Vec::new();
    for (domain, ip, policy) in &domains {
        let Some(server) =
            PolicyServer::start(&site, domain, ip, policy_port, &certificates, policy)
        else {
            return;
        };
        servers.push(server);
    }
    let extra = format!(
        ", ca_file = \"{}\", mta_sts_port = {policy_port}",
        certificates.ca_file.display()
    );
    let host = Host::start(
        &site.write_config(&mx_profile_with(&dns, postfix.port, 4, &extra)),
        "host.log",
    );
    let ids: Vec<String> = domains
        .iter()
        .map(|(domain, ..)| {
            let to = format!("bob@{domain}");
            host.submit(&["-f", "alice@example.com", &to], MESSAGE)
        })
        .collect();

    let settled = |id: &String, domain: &str| {
        let status = recipient(&host.show(id), &format!("SMTP:bob@{domain}")).clone();
        (status["state"] == "delivered" || status["attempts"] == 1).then_some(status)
    };
    let mut statuses = Vec::new();
    for (id, (domain, ..)) in ids.iter().zip(&domains) {
        wait_until(PROMPTLY, "each recipient has its first answer", || {
            settled(id, domain).is_some()
        });
        statuses.push(settled(id, domain).unwrap());
    }
    let [good, bad, testing, stray] = &statuses[..] else {
        unreachable!()
    };
    assert_eq!(good["state"], "delivered", "{good}\n{}", host.log());
    assert_eq!(
        testing["state"], "delivered",
        "testing only logs: {testing}"
    );
    let tls_log = std::fs::read_to_string(site.path("postfix/maillog")).unwrap_or_default();
    assert!(
        tls_log.contains("TLS connection established from"),
        "the exchanger saw TLS:\n{tls_log}"
    );

    assert_eq!(bad["state"], "pending", "{bad}");
    let refusal = bad["last_answer"].as_str().unwrap();
    assert!(
        refusal.contains("the MTA-STS policy of bad.test requires STARTTLS with a certificate that verifies for mx.bad.test")
            && refusal.contains("certificate"),
        "{refusal}"
    );
    assert_eq!(bad["class"], "tls-failure", "{bad}");

    assert_eq!(stray["state"], "pending", "{stray}");
    let stray_answer = stray["last_answer"].as_str().unwrap();
    assert!(
        stray_answer.contains("mx.stray.test is not among the mail exchangers the MTA-STS policy of stray.test names (*.elsewhere.test)"),
        "{stray_answer}"
    );
    assert_eq!(stray["class"], "tls-failure", "{stray}");

    // `status` counts each destination's trouble by class.
    let status_page = host.command(&["status"]).stdout;
    for domain in ["bad.test", "stray.test"] {
        assert!(
            status_page.lines().any(|line| line.starts_with(domain)
                && line.contains("destination  internet")
                && line.ends_with(": 1 deferred (tls-failure 1)")),
            "{domain}:\n{status_page}"
        );
    }
    let status_json = host.command(&["status", "--json"]).stdout;
    let troubles: Vec<serde_json::Value> = status_json
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|row| row.get("deferred").is_some())
        .collect();
    assert_eq!(troubles.len(), 2, "only the troubled ones: {status_json}");
    assert_eq!(troubles[0]["deferred"]["tls-failure"], 1, "{status_json}");

    wait_until(PROMPTLY, "Postfix relays both to the sink", || {
        sink.transactions_count() >= 2
    });
    let relayed = sink.transactions().join("\n");
    assert!(
        relayed.contains("<bob@good.test>") && relayed.contains("<bob@testing.test>"),
        "{relayed}"
    );

    // The policy is cached for its max_age, for all 4 instances: with its server gone and
    // the connection closed (an idle one is kept 2 s), good.test's next message goes by the
    // cached policy, whichever instance takes it.
    drop(servers.remove(0));
    std::thread::sleep(std::time::Duration::from_secs(3));
    let again = host.submit(&["-f", "alice@example.com", "carol@good.test"], MESSAGE);
    wait_until(
        PROMPTLY,
        "the second message to good.test is delivered",
        || recipient(&host.show(&again), "SMTP:carol@good.test")["state"] == "delivered",
    );
    let log = host.log();
    assert_eq!(
        log.matches("MTA-STS policy of good.test (id").count(),
        1,
        "fetched once:\n{log}"
    );

    // A policy that cannot be fetched is no policy (mail goes as before), and the fetch is
    // not tried again at each connection.
    for _ in 0..2 {
        let id = host.submit(&["-f", "alice@example.com", "dave@unserved.test"], MESSAGE);
        wait_until(PROMPTLY, "mail to unserved.test is delivered", || {
            recipient(&host.show(&id), "SMTP:dave@unserved.test")["state"] == "delivered"
        });
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    let log = host.log();
    assert_eq!(
        log.matches("cannot fetch the MTA-STS policy of unserved.test (id 1): cannot connect to mta-sts.unserved.test")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("delivering as without one, and trying again in 300 s"),
        "{log}"
    );
    assert!(
        log.contains("MTA-STS policy of good.test (id 20261208): Enforce")
            && log.contains("the MTA-STS policy of testing.test requires STARTTLS with a certificate that verifies for mx.testing.test, but is in testing mode"),
        "{log}"
    );
}

#[test]
fn a_backlog_to_a_slow_destination_does_not_fill_the_host_and_hold_up_other_domains() {
    if real_server("smtp-sink").is_none() {
        return;
    }
    let Some(dns) = Dnsmasq::start(
        Zone::new()
            .exchanger("slow.test", "127.0.0.13")
            .exchanger("fast.test", "127.0.0.14"),
    ) else {
        return;
    };
    let site = Site::new();
    let port = free_port();
    // slow.test takes one delivery at a time, 2 s each; the host holds 8 messages at once.
    let slow = SmtpSink::start_at(&site, "slow", "127.0.0.13", port, &["-w", "2"]);
    let fast = SmtpSink::start_at(&site, "fast", "127.0.0.14", port, &[]);
    let profile = mx_profile(&dns, port, 4)
        + "[limits]\nmax_in_flight = 8\n[destinations.domains.\"slow.test\"]\nconcurrency = 1\n";
    let host = Host::start(&site.write_config(&profile), "host.log");
    let backlog = submit_to(&host, "slow.test", 20);
    let other = host.submit(&["-f", "alice@example.com", "bob@fast.test"], MESSAGE);

    wait_until(PROMPTLY, "fast.test's message is delivered", || {
        recipient(&host.show(&other), "SMTP:bob@fast.test")["state"] == "delivered"
    });
    assert_eq!(fast.transactions_count(), 1);
    assert!(
        slow.transactions_count() < 5,
        "it went while slow.test's backlog was still waiting ({} of 20 delivered)",
        slow.transactions_count()
    );
    let waiting = recipient(&host.show(&backlog[19]), "SMTP:r19@slow.test").clone();
    assert_eq!(waiting["attempts"], 0, "waiting is no attempt: {waiting}");
    // The 4 instances share one resolver and its cache: slow.test is looked up once.
    wait_until(
        PROMPTLY,
        "a few deliveries to slow.test by several instances",
        || slow.transactions_count() >= 3,
    );
    let log = dns.log();
    assert_eq!(log.matches("query[MX] slow.test").count(), 1, "{log}");
}
