//! The SMTP listener against abuse, as an attacker tries it from 127.0.0.2 while a neighbour
//! at 127.0.0.3 goes on sending: password guessing across sessions (slowed to one answer a
//! second, then banned; the ban outlives a restart and `unban` lifts it), the per-client
//! limits (sessions, connections and messages per address, recipients per message), clients
//! that trickle a command or a message, a client that never reads its replies, and 2,000
//! idle connections with a flood of new ones.
//!
//! The listener binds 127.0.0.1 and the clients bind another loopback address before
//! connecting (`SmtpClient::connect_from`). Every profile sets `client_limits_exempt = []`:
//! by default the allowed networks (loopback) are exempt, as Postfix exempts `$mynetworks`.
//! The tests that measure time or memory hold `one_at_a_time`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use socket2::SockRef;
use spooler_tests::{connect_from, free_port, wait_until, Host, Site, SmtpClient, PROMPTLY};

use crate::common::{one_at_a_time, USERS};

/// Where the abuse comes from.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Another client, who must not notice it.
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The listener's name, in its greetings and refusals.
const HOSTNAME: &str = "mx.spooler.test";

const MESSAGE: &str =
    "From: app@example.com\r\nTo: bob@example.net\r\nSubject: limits\r\n\r\nHello.\r\n";

/// A profile: a listener on `port` with `keys`, exempting no client from the per-client
/// limits, and a directory transport `files` that delivers SMTP mail at once.
fn profile(port: u16, keys: &str) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:{port}\"\nhostname = \"{HOSTNAME}\"\n\
         client_limits_exempt = []\n{keys}\n\
         [[transport]]\nprovider = \"directory\"\nname = \"files\"\n\
         config = {{ path = \"{{site}}/files\", address_type = \"SMTP\" }}\n"
    )
}

/// A host on `profile(port, keys)`, and its listener's port.
fn start(site: &Site, keys: &str) -> (Host, u16) {
    let port = free_port();
    let host = Host::start(&site.write_config(&profile(port, keys)), "host.log");
    (host, port)
}

/// Listener keys where everyone must authenticate (user `app`, password `secret`), then
/// `keys`.
fn with_users(site: &Site, keys: &str) -> String {
    let users = site.path("users");
    std::fs::write(&users, USERS).unwrap();
    format!(
        "users_file = \"{}\"\nallowed_networks = []\n{keys}",
        users.display()
    )
}

/// The lines of the host's log that hold every one of `words`.
fn log_lines(host: &Host, words: &[&str]) -> Vec<String> {
    host.log()
        .lines()
        .filter(|line| words.iter().all(|word| line.contains(word)))
        .map(str::to_owned)
        .collect()
}

/// What a new connection from `source` is greeted with, after which the host must close it.
fn refused(source: Ipv4Addr, port: u16) -> String {
    let (mut client, greeting) = SmtpClient::connect_from(source, port);
    assert!(greeting.starts_with("421 4.7.0 "), "{greeting}");
    assert_eq!(client.reply(), "", "closed after {greeting}");
    greeting
}

/// Delivers a whole message from `source` (connect, EHLO, AUTH as `app` if `auth`, MAIL,
/// RCPT, DATA, QUIT): how long it took, and how long until the AUTH was answered.
fn deliver_from(source: Ipv4Addr, port: u16, auth: bool) -> (Duration, Duration) {
    let started = Instant::now();
    let (mut client, _) = SmtpClient::greeted_from(source, port);
    if auth {
        let login = client.auth_plain("app", "secret");
        assert!(login.starts_with("235 2.7.0"), "{login}");
    }
    let authenticated = started.elapsed();
    let reply = client.send_message("app@example.com", "bob@example.net", MESSAGE);
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let quit = client.command("QUIT");
    assert!(quit.starts_with("221"), "{quit}");
    (started.elapsed(), authenticated)
}

/// No message is stored anywhere, and the transport delivered nothing.
fn stored_nowhere(site: &Site, host: &Host) {
    for folder in ["Outbox", "Sent Items"] {
        let messages = host.list(folder);
        assert!(messages.is_empty(), "{folder}: {messages:#?}");
    }
    assert!(site.delivered_files("files").is_empty());
}

/// One answer a guessing client got: when, in which session, what, and whether it came
/// unasked (a `421` right after a `535`).
#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    session: usize,
    text: String,
    unasked: bool,
}

impl Answer {
    /// An answer to AUTH (success or failure), not a closing `421`.
    fn to_auth(&self) -> bool {
        self.text.starts_with("535") || self.text.starts_with("235")
    }
}

/// AUTH PLAIN as `user` with `password`; records its answer, and the `421` that may follow
/// a failure unasked. Whether the session goes on.
fn guess(
    client: &mut SmtpClient,
    session: usize,
    user: &str,
    password: &str,
    answers: &mut Vec<Answer>,
) -> bool {
    let text = client.auth_plain(user, password);
    let at = Instant::now();
    let failed = text.starts_with("535");
    let goes_on = failed || text.starts_with("235");
    answers.push(Answer {
        at,
        session,
        text,
        unasked: false,
    });
    if failed {
        let more = client.reply_within(Duration::from_millis(300));
        if !more.is_empty() {
            answers.push(Answer {
                at: Instant::now(),
                session,
                text: more,
                unasked: true,
            });
            return false;
        }
    }
    goes_on
}

/// The penalty after `failures` failed AUTHs: 1 s, then doubling, at most `cap`.
fn penalty(failures: u32, cap: Duration) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 1).min(16)).min(cap),
    }
}

#[test]
fn password_guessing_across_sessions_gets_one_answer_a_second_then_a_ban_while_others_log_in_at_once(
) {
    let _serial = one_at_a_time();
    let site = Site::new();
    const BAN_AFTER: usize = 6;
    let cap = Duration::from_secs(2);
    let keys = with_users(
        &site,
        &format!("auth_penalty = \"2s\"\nauth_ban_after = {BAN_AFTER}\nauth_ban_time = \"1h\""),
    );
    let (host, port) = start(&site, &keys);
    let mut answers = Vec::new();

    // A first failure is answered at once; the right password next is answered too, but a
    // second later; it does not reset the count.
    let (mut first, _) = SmtpClient::greeted_from(ATTACKER, port);
    let asked = Instant::now();
    assert!(guess(&mut first, 0, "app", "letmein", &mut answers));
    assert!(answers[0].text.starts_with("535 5.7.8"), "{answers:?}");
    assert!(asked.elapsed() < Duration::from_millis(500), "{answers:?}");
    assert!(guess(&mut first, 0, "app", "secret", &mut answers));
    assert!(answers[1].text.starts_with("235 2.7.0"), "{answers:?}");
    assert!(first.command("QUIT").starts_with("221"));

    // Three sessions guess at once, as fast as they are answered.
    const SESSIONS: usize = 3;
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let banned = Arc::new(AtomicBool::new(false));
    let guessers: Vec<JoinHandle<Vec<Answer>>> = (1..=SESSIONS)
        .map(|session| {
            let (barrier, banned) = (Arc::clone(&barrier), Arc::clone(&banned));
            let (mut client, _) = SmtpClient::greeted_from(ATTACKER, port);
            std::thread::spawn(move || {
                let user = ["admin", "postmaster", "app"][session - 1];
                barrier.wait();
                let mut answers = Vec::new();
                for attempt in 0..15 {
                    let after_the_ban = banned.load(Ordering::SeqCst);
                    let password = format!("guess-{session}-{attempt}");
                    let goes_on = guess(&mut client, session, user, &password, &mut answers);
                    if answers.iter().any(|a| a.text.contains("banned")) {
                        banned.store(true, Ordering::SeqCst);
                    }
                    if !goes_on || after_the_ban {
                        break;
                    }
                }
                answers
            })
        })
        .collect();

    // Meanwhile the neighbour logs in at once and sends.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, login) = deliver_from(NEIGHBOUR, port, true);
    assert!(
        login < Duration::from_secs(1),
        "the neighbour's login took {login:?} while 127.0.0.2 guessed"
    );

    for guesser in guessers {
        answers.extend(guesser.join().expect("a guessing session"));
    }
    answers.sort_by_key(|answer| answer.at);
    let shown: Vec<String> = answers
        .iter()
        .map(|a| {
            let since = a.at.duration_since(answers[0].at).as_secs_f64();
            format!("{since:6.2}s session {}: {}", a.session, a.text.trim_end())
        })
        .collect();
    let shown = shown.join("\n");
    eprintln!("the answers to 127.0.0.2:\n{shown}");

    // Banned at the BAN_AFTER-th failure: its 535 is followed by a 421, unasked, and the
    // session closed. No guess is answered after that one, and every session ends with a
    // 421 (the others' next AUTH) or closed.
    let count = |prefix: &str| {
        answers
            .iter()
            .filter(|a| a.text.starts_with(prefix))
            .count()
    };
    assert_eq!(count("535"), BAN_AFTER, "{shown}");
    assert_eq!(count("235"), 1, "{shown}");
    let bans: Vec<usize> = (0..answers.len()).filter(|&i| answers[i].unasked).collect();
    let [ban] = bans[..] else {
        panic!("one ban, after one failure:\n{shown}");
    };
    assert!(
        answers[ban].text.starts_with("421 4.7.0") && answers[ban].text.contains("banned"),
        "{shown}"
    );
    let last_failure = answers
        .iter()
        .rposition(|a| a.text.starts_with("535"))
        .unwrap();
    assert!(
        last_failure < ban,
        "a guess answered after the ban:\n{shown}"
    );
    assert_eq!(
        answers[last_failure].session, answers[ban].session,
        "{shown}"
    );
    for session in 1..=SESSIONS {
        let last = answers.iter().rev().find(|a| a.session == session).unwrap();
        assert!(
            last.text.is_empty() || last.text.starts_with("421 4.7.0"),
            "session {session} still open after the ban:\n{shown}"
        );
    }

    // Answers to AUTH are spaced by the penalty across the sessions: 1 s after the first
    // failure, then 2 s (the cap); never much more.
    let auth: Vec<&Answer> = answers.iter().filter(|a| a.to_auth()).collect();
    let mut failures = 0;
    for pair in auth.windows(2) {
        failures += u32::from(pair[0].text.starts_with("535"));
        let gap = pair[1].at.duration_since(pair[0].at);
        let due = penalty(failures, cap);
        assert!(
            gap + Duration::from_millis(200) >= due,
            "{gap:?} between answers after {failures} failure(s), {due:?} due:\n{shown}"
        );
        assert!(
            gap <= due + Duration::from_millis(1500),
            "{gap:?} between answers after {failures} failure(s), {due:?} due:\n{shown}"
        );
    }
    // At most one answer a second from the first failure on.
    let elapsed = auth.last().unwrap().at.duration_since(auth[0].at);
    assert!(
        (auth.len() - 1) as f64 <= elapsed.as_secs_f64() + 1.0,
        "{} answers in {elapsed:?}:\n{shown}",
        auth.len()
    );

    // The attacker's address is refused; the neighbour logs in at once and sends.
    let greeting = refused(ATTACKER, port);
    assert_eq!(
        greeting,
        format!("421 4.7.0 {HOSTNAME} 127.0.0.2 is banned after failed authentications, try again later\r\n")
    );
    let (took, login) = deliver_from(NEIGHBOUR, port, true);
    assert!(login < Duration::from_secs(1), "{login:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    wait_until(
        PROMPTLY,
        "the neighbour's two messages are delivered",
        || site.delivered_files("files").len() == 2,
    );

    // One line says who was banned, and which user names were tried.
    let lines = log_lines(&host, &["banned 127.0.0.2"]);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    for user in ["admin", "postmaster", "app"] {
        assert!(lines[0].contains(user), "{user}: {}", lines[0]);
    }
}

/// `bans --json`'s list.
fn bans(host: &Host) -> Vec<Value> {
    let listed = host.command(&["bans", "--json"]);
    assert_eq!(listed.code, Some(0), "{}{}", listed.stdout, listed.stderr);
    let listed: Value = serde_json::from_str(&listed.stdout)
        .unwrap_or_else(|e| panic!("bans --json: {e}: {}", listed.stdout));
    listed["bans"]
        .as_array()
        .unwrap_or_else(|| panic!("no bans array: {listed}"))
        .clone()
}

#[test]
fn a_ban_survives_a_restart_is_listed_and_unban_lifts_it() {
    let site = Site::new();
    let keys = with_users(
        &site,
        "auth_penalty = \"1s\"\nauth_ban_after = 2\nauth_ban_time = \"1h\"",
    );
    let (mut host, port) = start(&site, &keys);
    let (mut client, _) = SmtpClient::greeted_from(ATTACKER, port);
    let first = client.auth_plain("app", "letmein");
    assert!(first.starts_with("535 5.7.8"), "{first}");
    let second = client.auth_plain("admin", "admin");
    assert!(second.starts_with("535 5.7.8"), "{second}");
    let banned = client.reply();
    assert!(banned.starts_with("421 4.7.0"), "{banned}");
    assert!(banned.contains("banned"), "{banned}");
    assert_eq!(client.reply(), "", "closed after the ban");
    let refusal = format!(
        "421 4.7.0 {HOSTNAME} 127.0.0.2 is banned after failed authentications, try again later\r\n"
    );
    assert_eq!(refused(ATTACKER, port), refusal);
    assert!(site.path("data/smtp-bans").exists(), "the bans are kept");

    // Listed: the address, until when, the failures and the user names tried.
    let listed = bans(&host);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let ban = &listed[0];
    assert_eq!(ban["address"], "127.0.0.2", "{ban}");
    assert_eq!(ban["failures"], 2, "{ban}");
    let users: Vec<&str> = ban["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users: {ban}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        users.contains(&"app") && users.contains(&"admin") && users.len() == 2,
        "{ban}"
    );
    let until = ban["until"].clone();
    let text = host.command(&["bans"]);
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    for expected in ["127.0.0.2", "app", "admin"] {
        assert!(
            text.stdout.contains(expected),
            "{expected}:\n{}",
            text.stdout
        );
    }

    // Stopped and started again on the same profile: still banned, until the same time.
    host.signal(libc::SIGTERM);
    assert_eq!(host.wait_exit(PROMPTLY), Some(0), "{}", host.log());
    let host = Host::start(host.config(), "restarted.log");
    assert_eq!(refused(ATTACKER, port), refusal);
    let listed = bans(&host);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["address"], "127.0.0.2");
    assert_eq!(listed[0]["until"], until);

    // Lifted: greeted again.
    let lifted = host.command(&["unban", "127.0.0.2"]);
    assert_eq!(lifted.code, Some(0), "{}{}", lifted.stdout, lifted.stderr);
    assert_eq!(lifted.stdout, "done\n", "as hold and release answer");
    let (mut client, greeting) = SmtpClient::connect_from(ATTACKER, port);
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(client.command("QUIT").starts_with("221"));
    assert!(bans(&host).is_empty());

    // An address that is not banned cannot be lifted.
    for address in ["127.0.0.2", "127.0.0.9"] {
        let not = host.command(&["unban", address]);
        assert_ne!(not.code, Some(0), "{address}: {}", not.stdout);
        let said = format!("{}{}", not.stdout, not.stderr);
        assert!(said.contains("not banned"), "{address}: {said}");
        assert!(said.contains(address), "{address}: {said}");
    }

    // Until when: auth_ban_time (an hour) after the ban, in milliseconds since the epoch as
    // every time the host answers.
    let until_seconds = until
        .as_i64()
        .unwrap_or_else(|| panic!("`until` is not milliseconds since the epoch: {until}"))
        / 1000;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (until_seconds - (now + 3600)).abs() < 120,
        "banned for auth_ban_time, an hour: until {until}, now {now}"
    );
}

#[test]
fn sessions_beyond_the_per_client_bound_get_421_while_others_are_served_and_it_is_logged_once() {
    let site = Site::new();
    let (host, port) = start(&site, "max_sessions_per_client = 3");
    let mut held: Vec<SmtpClient> = (0..3)
        .map(|_| {
            let (client, greeting) = SmtpClient::connect_from(ATTACKER, port);
            assert!(greeting.starts_with("220 "), "{greeting}");
            client
        })
        .collect();
    for _ in 0..5 {
        assert_eq!(
            refused(ATTACKER, port),
            format!(
                "421 4.7.0 {HOSTNAME} too many sessions from your address, try again later\r\n"
            )
        );
    }
    let (mut neighbour, _) = SmtpClient::greeted_from(NEIGHBOUR, port);
    assert!(neighbour.command("QUIT").starts_with("221"));

    std::thread::sleep(Duration::from_millis(200));
    let logged = log_lines(&host, &["refused 127.0.0.2", "sessions"]);
    assert_eq!(logged.len(), 1, "five refusals, one line: {logged:#?}");

    // One session ends: room again.
    let mut ending = held.pop().unwrap();
    assert!(ending.command("QUIT").starts_with("221"));
    assert_eq!(ending.reply(), "");
    wait_until(
        PROMPTLY,
        "a fourth session from 127.0.0.2 is greeted",
        || {
            SmtpClient::connect_from(ATTACKER, port)
                .1
                .starts_with("220 ")
        },
    );
}

#[test]
fn connections_beyond_the_rate_get_421_while_others_are_served() {
    let site = Site::new();
    let (host, port) = start(&site, "connection_rate = 20");
    for n in 0..20 {
        let (mut client, greeting) = SmtpClient::connect_from(ATTACKER, port);
        assert!(greeting.starts_with("220 "), "connection {n}: {greeting}");
        assert!(client.command("QUIT").starts_with("221"));
    }
    for _ in 0..3 {
        assert_eq!(
            refused(ATTACKER, port),
            format!(
                "421 4.7.0 {HOSTNAME} too many connections from your address, try again later\r\n"
            )
        );
    }
    let (mut neighbour, _) = SmtpClient::greeted_from(NEIGHBOUR, port);
    assert!(neighbour.command("QUIT").starts_with("221"));
    std::thread::sleep(Duration::from_millis(200));
    let logged = log_lines(&host, &["refused 127.0.0.2", "connections"]);
    assert_eq!(logged.len(), 1, "three refusals, one line: {logged:#?}");
}

#[test]
fn messages_beyond_the_rate_get_421_at_mail_across_sessions() {
    let site = Site::new();
    let (host, port) = start(&site, "message_rate = 5");
    let (mut first, _) = SmtpClient::greeted_from(ATTACKER, port);
    for n in 0..3 {
        let content = format!("Subject: number {n}\r\n\r\nHello.\r\n");
        let reply = first.send_message("app@example.com", "bob@example.net", &content);
        assert!(reply.starts_with("250 2.0.0"), "message {n}: {reply}");
    }
    assert!(first.command("QUIT").starts_with("221"));
    let (mut second, _) = SmtpClient::greeted_from(ATTACKER, port);
    for n in 3..5 {
        let content = format!("Subject: number {n}\r\n\r\nHello.\r\n");
        let reply = second.send_message("app@example.com", "bob@example.net", &content);
        assert!(reply.starts_with("250 2.0.0"), "message {n}: {reply}");
    }
    let sixth = second.command("MAIL FROM:<app@example.com>");
    assert_eq!(
        sixth,
        "421 4.7.0 too many messages from your address, try again later\r\n"
    );
    assert_eq!(second.reply(), "", "closed after the 421");
    // Again in a new session: refused again, logged once.
    let (mut third, _) = SmtpClient::greeted_from(ATTACKER, port);
    let seventh = third.command("MAIL FROM:<app@example.com>");
    assert!(seventh.starts_with("421 4.7.0"), "{seventh}");

    deliver_from(NEIGHBOUR, port, false);
    wait_until(PROMPTLY, "six messages are delivered", || {
        site.delivered_files("files").len() == 6
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(site.delivered_files("files").len(), 6);
    let logged = log_lines(&host, &["refused", "127.0.0.2", "messages"]);
    assert_eq!(logged.len(), 1, "two refusals, one line: {logged:#?}");
}

#[test]
fn recipients_beyond_the_bound_get_452_and_the_message_goes_with_the_others() {
    let site = Site::new();
    let (host, port) = start(&site, "max_recipients = 3");
    let (mut client, _) = SmtpClient::greeted_from(ATTACKER, port);
    assert!(client
        .command("MAIL FROM:<app@example.com>")
        .starts_with("250"));
    for name in ["bob", "carol", "dave"] {
        let reply = client.command(&format!("RCPT TO:<{name}@example.net>"));
        assert!(reply.starts_with("250 2.1.5"), "{name}: {reply}");
    }
    assert_eq!(
        client.command("RCPT TO:<erin@example.net>"),
        "452 4.5.3 too many recipients (at most 3 per message)\r\n"
    );
    assert!(client.command("DATA").starts_with("354"));
    client.send(MESSAGE);
    let done = client.command(".");
    assert!(done.starts_with("250 2.0.0 Ok: queued as "), "{done}");
    let id = done.trim_end().rsplit(' ').next().unwrap();
    let message = host.show(id);
    let addresses: Vec<&str> = message["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "SMTP:bob@example.net",
            "SMTP:carol@example.net",
            "SMTP:dave@example.net"
        ]
    );
    assert!(client.command("QUIT").starts_with("221"));
}

/// Writes `text` one byte every `pause` on a handle of its own, then `filler` for ever,
/// until the connection fails or `stop` is set; for at most `limit`.
fn trickle(
    stream: TcpStream,
    text: &'static [u8],
    filler: &'static [u8],
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let (pause, limit) = (Duration::from_millis(300), Duration::from_secs(9));
    std::thread::spawn(move || {
        let mut stream = stream;
        stream.set_nodelay(true).expect("no Nagle");
        let started = Instant::now();
        let bytes = text.iter().chain(filler.iter().cycle());
        for byte in bytes {
            if stop.load(Ordering::SeqCst) || started.elapsed() > limit {
                return;
            }
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(pause);
        }
    })
}

#[test]
fn a_command_or_a_message_trickled_a_byte_at_a_time_is_cut_at_its_total_time() {
    let _serial = one_at_a_time();
    let site = Site::new();
    let (host, port) = start(
        &site,
        "command_timeout = \"2s\"\nmessage_time_limit = \"3s\"",
    );

    // "EHLO x" and more, a byte each 300 ms, never the end of the line: cut at 2 s
    // from the greeting, though it never fell silent.
    let command = std::thread::spawn(move || {
        let (mut client, greeting) = SmtpClient::connect_from(ATTACKER, port);
        assert!(greeting.starts_with("220 "), "{greeting}");
        let greeted = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = client.writer().try_clone().unwrap();
        let trickler = trickle(writer, b"EHLO x", b"x", Arc::clone(&stop));
        let reply = client.reply();
        let took = greeted.elapsed();
        stop.store(true, Ordering::SeqCst);
        trickler.join().unwrap();
        let closed = client.reply();
        (reply, took, closed)
    });

    // A message, a byte each 300 ms: cut at 3 s from the 354.
    let (mut client, _) = SmtpClient::greeted_from(NEIGHBOUR, port);
    client.start_data("app@example.com", "bob@example.net");
    let asked = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = client.writer().try_clone().unwrap();
    let trickler = trickle(
        writer,
        b"Subject: slow\r\n\r\n",
        b"x\r\n",
        Arc::clone(&stop),
    );
    let reply = client.reply();
    let took = asked.elapsed();
    stop.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert!(reply.starts_with("421 4.4.2"), "DATA: {reply}");
    assert!(
        took >= Duration::from_millis(2800) && took <= Duration::from_secs(5),
        "DATA cut after {took:?}, message_time_limit 3s"
    );
    assert_eq!(client.reply(), "", "closed after DATA's 421");

    let (reply, command_took, closed) = command.join().expect("the trickling command");
    eprintln!("the command was cut after {command_took:?}, the message after {took:?}");
    assert!(reply.starts_with("421 4.4.2"), "EHLO: {reply}");
    assert!(
        command_took >= Duration::from_millis(1800) && command_took <= Duration::from_secs(4),
        "the command cut after {command_took:?}, command_timeout 2s"
    );
    assert_eq!(closed, "", "closed after the command's 421");

    std::thread::sleep(Duration::from_millis(300));
    stored_nowhere(&site, &host);
}

/// The host's resident memory, in bytes (`VmRSS` in `/proc/<pid>/status`).
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

#[test]
fn a_client_that_never_reads_its_replies_costs_bounded_memory_and_is_closed() {
    let _serial = one_at_a_time();
    let site = Site::new();
    let (host, port) = start(&site, "command_timeout = \"3s\"");
    deliver_from(NEIGHBOUR, port, false);
    std::thread::sleep(Duration::from_millis(300));
    let before = resident(host.pid());
    assert!(before > 0, "no VmRSS for the host");
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (Arc::clone(&sampling), host.pid());
        std::thread::spawn(move || {
            let mut most = 0;
            while sampling.load(Ordering::SeqCst) {
                most = most.max(resident(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            most
        })
    };

    // EHLO after EHLO, 64 KiB a write, up to 32 MiB, never reading a reply (each is ~25
    // times longer than its command).
    let mut stream = connect_from(ATTACKER, port).expect("the listener accepts");
    stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let chunk = "EHLO never-reads.example\r\n".repeat(2600).into_bytes();
    let started = Instant::now();
    let (mut written, mut offset) = (0usize, 0usize);
    let (mut blocked, mut closed) = (None, None);
    while written < 32 << 20 && started.elapsed() < Duration::from_secs(15) {
        match stream.write(&chunk[offset..]) {
            Ok(0) => {
                closed = Some(started.elapsed());
                break;
            }
            Ok(n) => {
                written += n;
                offset = (offset + n) % chunk.len();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked.get_or_insert(started.elapsed());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                closed = Some(started.elapsed());
                break;
            }
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let most = sampler.join().unwrap();
    eprintln!(
        "wrote {written} bytes; blocked at {blocked:?}, closed at {closed:?}; \
         VmRSS {before} before, at most {most}"
    );
    let grown = most.saturating_sub(before);
    assert!(
        grown < 20 << 20,
        "the host grew by {grown} bytes for one client that never reads"
    );
    assert!(
        written < 32 << 20,
        "the host took 32 MiB of commands it could not answer"
    );
    let blocked = blocked.expect("the host stops reading a client that does not read");
    let closed = closed.expect("the host closes the connection");
    assert!(
        closed <= blocked + Duration::from_secs(3 + 3),
        "closed at {closed:?}, the host stopped reading at {blocked:?}; command_timeout 3s"
    );
    // The connection is gone for reading too.
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let ended = match stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    assert!(ended, "the connection is closed");
    deliver_from(NEIGHBOUR, port, false);
}

/// Raises this process's soft limit on open files to its hard limit (the hosts started
/// after inherit it); the limit now.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit take a pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    limit.rlim_cur
}

/// `count` idle sessions from 127.0.1.1 to 127.0.1.100, each greeted.
fn idle_sessions(port: u16, count: usize) -> Vec<TcpStream> {
    const THREADS: usize = 4;
    let openers: Vec<JoinHandle<Vec<TcpStream>>> = (0..THREADS)
        .map(|thread| {
            std::thread::spawn(move || {
                (0..count / THREADS)
                    .map(|n| {
                        let index = thread * (count / THREADS) + n;
                        let source = Ipv4Addr::new(127, 0, 1, 1 + (index % 100) as u8);
                        let mut stream = connect_from(source, port).expect("an idle connection");
                        stream.set_read_timeout(Some(PROMPTLY)).unwrap();
                        let mut greeting = [0; 256];
                        let read = stream.read(&mut greeting).unwrap_or(0);
                        assert!(
                            greeting[..read].starts_with(b"220 "),
                            "idle session {index}: {}",
                            String::from_utf8_lossy(&greeting[..read])
                        );
                        stream
                    })
                    .collect()
            })
        })
        .collect();
    openers
        .into_iter()
        .flat_map(|opener| opener.join().expect("opening idle sessions"))
        .collect()
}

/// Threads that connect from one address and drop the connection (with a reset, so that no
/// port waits in TIME_WAIT) as fast as they can; stopped when dropped.
struct Flood {
    flooding: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    fn start(source: Ipv4Addr, port: u16, threads: usize) -> Flood {
        let flooding = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (flooding, connections) = (Arc::clone(&flooding), Arc::clone(&connections));
                std::thread::spawn(move || {
                    while flooding.load(Ordering::SeqCst) {
                        if let Ok(stream) = connect_from(source, port) {
                            SockRef::from(&stream).set_linger(Some(Duration::ZERO)).ok();
                            connections.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Flood {
            flooding,
            connections,
            threads,
        }
    }

    /// Stops it; how many connections it made.
    fn stop(mut self) -> usize {
        self.halt();
        self.connections.load(Ordering::SeqCst)
    }

    fn halt(&mut self) {
        self.flooding.store(false, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            thread.join().ok();
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.halt();
    }
}

#[test]
fn two_thousand_idle_connections_and_a_flood_leave_another_address_delivering_within_a_second() {
    let _serial = one_at_a_time();
    const IDLE: usize = 2000;
    let open_files = raise_open_files_limit();
    assert!(
        open_files >= IDLE as u64 + 1000,
        "open files limited to {open_files}: raise the hard limit (ulimit -Hn)"
    );
    let site = Site::new();
    let (host, port) = start(&site, "max_sessions = 3000");
    let idle = idle_sessions(port, IDLE);
    assert_eq!(idle.len(), IDLE);

    // Four threads connect from 127.0.0.2 and drop the connection, as fast as they can,
    // beyond its connection rate.
    let flood = Flood::start(ATTACKER, port, 4);
    wait_until(PROMPTLY, "the flood is refused", || {
        !log_lines(&host, &["refused 127.0.0.2", "connections"]).is_empty()
    });

    // The neighbour delivers five messages meanwhile, each within a second.
    let deliveries = std::thread::spawn(move || {
        (0..5)
            .map(|_| {
                let (took, _) = deliver_from(NEIGHBOUR, port, false);
                std::thread::sleep(Duration::from_millis(400));
                took
            })
            .collect::<Vec<Duration>>()
    })
    .join();
    let connections = flood.stop();
    let deliveries = deliveries.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    eprintln!("{connections} connections opened from 127.0.0.2; deliveries took {deliveries:?}");
    assert!(connections > 600, "a flood: {connections} connections");
    // Each within a second, but one may meet the machine's other load (the whole test suite
    // runs beside it on two cores: one in four CI runs saw a first delivery at 1.12 s); that
    // one still within two.
    let slow = deliveries
        .iter()
        .filter(|took| **took >= Duration::from_secs(1))
        .count();
    assert!(
        slow <= 1,
        "{slow} deliveries took a second or more: {deliveries:?}"
    );
    for took in &deliveries {
        assert!(
            *took < Duration::from_secs(2),
            "a delivery took {took:?}: {deliveries:?}"
        );
    }
    wait_until(PROMPTLY, "the five messages are delivered", || {
        site.delivered_files("files").len() == 5
    });

    // The idle sessions are still there.
    for stream in idle.iter().step_by(250) {
        let mut stream = stream;
        stream
            .write_all(b"NOOP\r\n")
            .expect("an idle session is open");
        let mut reply = [0; 256];
        let read = stream.read(&mut reply).unwrap_or(0);
        assert!(
            reply[..read].starts_with(b"250"),
            "{}",
            String::from_utf8_lossy(&reply[..read])
        );
    }
    // The flood's refusals are logged once per limit, not each.
    let logged = log_lines(&host, &["127.0.0.2"]);
    assert!(logged.len() <= 2, "{logged:#?}");
}
