//! Providers that die natively (a segfault, `abort`, a stack overflow, a leak past a memory
//! limit, `exit(0)`) in a transport's `submit`, a preprocessor's `process`, a hook's `run` and
//! an inbound `pull` (`fixture-crashing`), run two ways:
//! - isolated (`isolate = true`): the host never dies; the child is replaced; the message in
//!   the call is deferred and, after three deaths, held as suspected; everything else goes;
//! - in the host's process: the test plays systemd (`Restart=always`), starting the host again
//!   whenever it dies. It dies at most three times per poisonous message, then holds it and
//!   delivers everything else.

use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use spooler_tests::{host_binary, run_host, run_host_with_input, wait_until, Host, Site};

const FAULTS: [&str; 5] = ["segfault", "abort", "stack-overflow", "leak", "exit"];

const FILES: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files", address_type = "FILE" }
"#;

const QUICK_RETRY: &str = "[retry]\nmin_delay = \"200ms\"\nmax_delay = \"500ms\"\n";

/// Long enough for three deaths with the growing pauses between restarts (1, 2, 4 s), on a
/// busy machine.
const PATIENTLY: Duration = Duration::from_secs(90);

/// The address type of the crashing transport with `fault`.
fn address_type(fault: &str) -> String {
    fault.replace('-', "_").to_uppercase()
}

/// One crashing instance of `provider` per fault, named `<prefix>-<fault>`, each set off by
/// `POISON-<fault>`. Isolated, the leaking one gets a memory limit.
fn crashing(table: &str, provider: &str, prefix: &str, isolate: bool, extra: &str) -> String {
    FAULTS
        .iter()
        .map(|fault| {
            let limit = if isolate && *fault == "leak" {
                "memory_limit = \"256M\"\n"
            } else {
                ""
            };
            let extra = extra
                .replace("{type}", &address_type(fault))
                .replace("{fault}", fault);
            format!(
                "[[{table}]]\nprovider = \"{provider}\"\nname = \"{prefix}-{fault}\"\nisolate = {isolate}\n{limit}\
                 config = {{ fault = \"{fault}\", poison = \"POISON-{fault}\"{extra} }}\n"
            )
        })
        .collect()
}

// Each message has a Message-ID of its own, so that when the supervisor submits it again
// (the host died before `submit` heard its answer) the spooler stores it once.

fn poison(fault: &str) -> String {
    format!("Message-ID: <poison-{fault}@test>\r\nSubject: poison for {fault}\r\n\r\nPOISON-{fault}\r\n")
}

fn good(n: usize) -> String {
    format!("Message-ID: <good-{n}@test>\r\nSubject: good {n}\r\n\r\nnothing to see\r\n")
}

/// The queue as JSON objects, one per message; empty while the host is down.
fn queue(config: &Path) -> Vec<serde_json::Value> {
    let config = config.to_string_lossy();
    run_host(
        &["queue", "--json", "--config", &config],
        &[],
        Duration::from_secs(30),
    )
    .stdout
    .lines()
    .filter_map(|line| serde_json::from_str(line).ok())
    .collect()
}

/// Why the queue holds message `id`, if it does.
fn held_because(queue: &[serde_json::Value], id: &str) -> Option<String> {
    queue
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["held_because"].as_str().map(str::to_owned))
}

/// True once the queue holds every one of `ids` for crashing its instance three times.
fn all_held(queue: &[serde_json::Value], ids: &[(String, String)]) -> bool {
    ids.iter().all(|(id, instance)| {
        held_because(queue, id).is_some_and(|why| {
            why == format!("suspected of crashing provider {instance} (3 times)")
        })
    })
}

/// The `status --json` row of `instance`.
fn status_row(host: &Host, instance: &str) -> serde_json::Value {
    host.command(&["status", "--json"])
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|row| row["name"] == instance)
        .unwrap_or_else(|| panic!("no status row for {instance}"))
}

/// What `fault` looks like from outside the process it killed.
fn looks_like(fault: &str) -> &'static [&'static str] {
    match fault {
        "segfault" => &["signal 11 (SIGSEGV"],
        "abort" => &["signal 6 (SIGABRT"],
        // Rust's guard page handler reports the overflow and aborts.
        "stack-overflow" => &["signal 6 (SIGABRT", "signal 11 (SIGSEGV"],
        "leak" => &["after reaching its memory_limit of 268435456 bytes"],
        "exit" => &["exited with code 0"],
        _ => unreachable!(),
    }
}

/// Whether `instance`'s last fault in `status` shows `fault`, during `call`.
fn last_fault_shows(host: &Host, instance: &str, fault: &str, call: &str) -> bool {
    status_row(host, instance)["isolated"]["last_fault"]
        .as_str()
        .is_some_and(|text| {
            text.contains(&format!("during {call}"))
                && looks_like(fault).iter().any(|seen| text.contains(seen))
        })
}

fn assert_last_fault(host: &Host, instance: &str, fault: &str, call: &str) {
    assert!(
        last_fault_shows(host, instance, fault, call),
        "{fault} during {call}: {}",
        status_row(host, instance)
    );
}

fn assert_host_survived(host: &Host) {
    let log = host.log();
    assert_eq!(
        log.matches("spooler running").count(),
        1,
        "the host started once and is running:\n{log}"
    );
    assert_eq!(host.command(&["status"]).code, Some(0), "{log}");
}

#[test]
fn isolated_transports_that_die_on_a_message_leave_the_host_running_and_that_message_is_held() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing(
            "transport",
            "crashing-transport",
            "crash",
            true,
            ", address_type = \"{type}\""
        )
    ));
    let host = Host::start(&config, "host.log");
    let poisoned: Vec<(String, String)> = FAULTS
        .iter()
        .map(|fault| {
            let id = host.submit(
                &[format!("{}:x", address_type(fault)).as_str()],
                &poison(fault),
            );
            (id, format!("crash-{fault}"))
        })
        .collect();
    let fine: Vec<String> = FAULTS
        .iter()
        .map(|fault| host.submit(&[format!("{}:y", address_type(fault)).as_str()], &good(0)))
        .collect();
    for n in 0..50 {
        host.submit(&["FILE:bob"], &good(n));
    }

    wait_until(PATIENTLY, "every poison message is held", || {
        all_held(&queue(&config), &poisoned)
    });
    wait_until(PATIENTLY, "everything else is delivered", || {
        site.delivered_files("files").len() == 50
            && fine
                .iter()
                .all(|id| host.show(id)["folder"] == "Sent Items")
    });
    assert_host_survived(&host);
    for fault in FAULTS {
        let instance = format!("crash-{fault}");
        let row = status_row(&host, &instance);
        assert!(row["isolated"]["restarts"].as_u64().unwrap() >= 3, "{row}");
        assert_last_fault(&host, &instance, fault, "submit of message");
    }
    let table = host.command(&["queue"]).stdout;
    assert!(
        table.contains("(held: suspected of crashing provider crash-segfault (3 times))"),
        "{table}"
    );
    assert!(
        host.command(&["status"])
            .stdout
            .contains("Quarantined: 5 message(s)"),
        "{}",
        host.command(&["status"]).stdout
    );

    // Released, the message is tried again (and crashes its transport again).
    let (segfault, _) = &poisoned[0];
    assert_eq!(host.command(&["release", segfault]).code, Some(0));
    assert_eq!(held_because(&queue(&config), segfault), None);
    wait_until(
        PATIENTLY,
        "it crashes the transport three times again",
        || held_because(&queue(&config), segfault).is_some(),
    );
    let log = host.log();
    assert_eq!(
        log.matches(&format!(
            "{segfault}: held: suspected of crashing provider crash-segfault (3 times)"
        ))
        .count(),
        2,
        "{log}"
    );
}

#[test]
fn isolated_preprocessors_that_die_leave_the_host_running_and_their_message_is_held() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing("preprocessor", "crashing-preprocessor", "pre", true, "")
    ));
    let host = Host::start(&config, "host.log");
    let poisoned: Vec<(String, String)> = FAULTS
        .iter()
        .map(|fault| {
            (
                host.submit(&["FILE:x"], &poison(fault)),
                format!("pre-{fault}"),
            )
        })
        .collect();
    for n in 0..20 {
        host.submit(&["FILE:bob"], &good(n));
    }
    wait_until(PATIENTLY, "every poison message is held", || {
        all_held(&queue(&config), &poisoned)
    });
    wait_until(PATIENTLY, "everything else is delivered", || {
        site.delivered_files("files").len() == 20
    });
    assert_host_survived(&host);
    for fault in FAULTS {
        assert_last_fault(&host, &format!("pre-{fault}"), fault, "process of message");
    }
}

#[test]
fn an_isolated_hook_that_dies_is_left_out_and_the_message_goes_on() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing("hook", "crashing-hook", "hook", true, "")
    ));
    let host = Host::start(&config, "host.log");
    let poisoned: Vec<String> = FAULTS
        .iter()
        .map(|fault| host.submit(&["FILE:x"], &poison(fault)))
        .collect();
    for n in 0..20 {
        host.submit(&["FILE:bob"], &good(n));
    }
    // A hook's failure never stops a message: it goes on without that hook, dead or not.
    wait_until(PATIENTLY, "every message is finished", || {
        site.delivered_files("files").len() == 25
            && poisoned
                .iter()
                .all(|id| host.show(id)["folder"] == "Sent Items")
    });
    assert_host_survived(&host);
    for fault in FAULTS {
        assert_last_fault(&host, &format!("hook-{fault}"), fault, "run of message");
    }
}

#[test]
fn isolated_transports_that_die_fetching_mail_leave_the_host_running() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    fs::write(site.path("poisoned-source"), "").unwrap();
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing(
            "transport",
            "crashing-transport",
            "crash",
            true,
            ", address_type = \"{type}\", pull_poison = \"{site}/poisoned-source\""
        )
    ));
    let host = Host::start(&config, "host.log");
    wait_until(PATIENTLY, "every transport died fetching", || {
        FAULTS
            .iter()
            .all(|fault| last_fault_shows(&host, &format!("crash-{fault}"), fault, "pull"))
    });
    for n in 0..20 {
        host.submit(&["FILE:bob"], &good(n));
    }
    wait_until(PATIENTLY, "the other mail is delivered", || {
        site.delivered_files("files").len() == 20
    });
    assert_host_survived(&host);
}

/// Plays systemd with `Restart=always`: starts the host whenever it dies, and counts deaths.
struct Supervisor {
    config: PathBuf,
    log: PathBuf,
    /// The host's data memory cap (like systemd's `MemoryMax`), for a provider that leaks.
    memory_limit: Option<u64>,
    host: Option<Child>,
    deaths: Vec<ExitStatus>,
}

impl Supervisor {
    fn start(config: &Path, memory_limit: Option<u64>) -> Supervisor {
        let mut supervisor = Supervisor {
            config: config.to_owned(),
            log: config.with_file_name("host.log"),
            memory_limit,
            host: None,
            deaths: Vec::new(),
        };
        supervisor.spawn();
        let status = ["status", "--config", &config.to_string_lossy()].map(str::to_owned);
        supervisor.keep_up_until("the host answers", || {
            let args: Vec<&str> = status.iter().map(String::as_str).collect();
            run_host(&args, &[], Duration::from_secs(30)).code == Some(0)
        });
        supervisor
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(host_binary());
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(limit) = self.memory_limit {
            // SAFETY: setrlimit is async-signal-safe and takes a pointer to a local.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.host = Some(command.spawn().expect("the host starts"));
    }

    /// Starts the host again if it died; true if it did.
    fn revive(&mut self) -> bool {
        let host = self.host.as_mut().expect("a host");
        let Some(status) = host.try_wait().unwrap() else {
            return false;
        };
        self.deaths.push(status);
        std::thread::sleep(Duration::from_millis(200));
        self.spawn();
        true
    }

    /// Submits `message` to `recipient`, starting the host again while it is down.
    fn submit(&mut self, recipient: &str, message: &str) -> String {
        let deadline = Instant::now() + PATIENTLY * 2;
        loop {
            self.revive();
            let config = self.config.to_string_lossy().into_owned();
            let finished = run_host_with_input(
                &["submit", "--config", &config, recipient],
                message.as_bytes(),
                Duration::from_secs(120),
            );
            if finished.code == Some(0) {
                return finished.stdout.trim().to_owned();
            }
            // EX_UNAVAILABLE: the host is down (it died under the client, or before it).
            assert_eq!(finished.code, Some(69), "submit: {}", finished.stderr);
            assert!(Instant::now() < deadline, "submit: {}", finished.stderr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keeps the host up (starting it again each time it dies) until `done` holds.
    fn keep_up_until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + PATIENTLY * 2;
        loop {
            if self.revive() {
                continue;
            }
            if done() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting until {what} after {} deaths:\n{}",
                self.deaths.len(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(host) = &mut self.host {
            host.kill().ok();
            host.wait().ok();
        }
    }
}

/// A transport in the host's process that dies on one message: the host dies with it at most
/// three times, then holds the message and delivers the rest.
fn in_process_transport_dies(fault: &str) {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "{FILES}\n[[transport]]\nprovider = \"crashing-transport\"\nname = \"crasher\"\n\
         isolate = false\nconfig = {{ fault = \"{fault}\" }}\n{QUICK_RETRY}"
    ));
    let mut supervisor = Supervisor::start(&config, Some(1 << 30));
    let poisoned = supervisor.submit("CRASH:x", &poison(fault));
    let fine = supervisor.submit("CRASH:y", &good(0));
    for n in 0..20 {
        supervisor.submit("FILE:bob", &good(n));
    }
    supervisor.keep_up_until("the message is held and the rest delivered", || {
        let queue = queue(&config);
        all_held(&queue, &[(poisoned.clone(), "crasher".into())])
            && queue.len() == 1
            && site.delivered_files("files").len() == 20
    });
    let log = supervisor.log();
    assert!(
        (1..=3).contains(&supervisor.deaths.len()),
        "{fault}: the host died {} times:\n{log}",
        supervisor.deaths.len()
    );
    for death in &supervisor.deaths {
        let expected = match fault {
            "exit" => death.code() == Some(0),
            // The leak ends in a failed allocation, which aborts.
            "abort" | "leak" => death.signal() == Some(libc::SIGABRT),
            "segfault" => death.signal() == Some(libc::SIGSEGV),
            _ => death.signal().is_some(),
        };
        assert!(expected, "{fault}: the host ended with {death}");
    }
    assert!(
        log.contains(&format!(
            "the host stopped during a call of crasher for message {poisoned}, without a clean \
             shutdown"
        )),
        "{log}"
    );
    let config = config.to_string_lossy();
    let shown = run_host(
        &["show", "--json", "--config", &config, &fine],
        &[],
        Duration::from_secs(30),
    );
    assert!(shown.stdout.contains("Sent Items"), "{}", shown.stdout);
}

#[test]
fn an_in_process_transport_that_segfaults_takes_the_host_down_at_most_three_times() {
    in_process_transport_dies("segfault");
}

#[test]
fn an_in_process_transport_that_aborts_takes_the_host_down_at_most_three_times() {
    in_process_transport_dies("abort");
}

#[test]
fn an_in_process_transport_that_overflows_its_stack_takes_the_host_down_at_most_three_times() {
    in_process_transport_dies("stack-overflow");
}

#[test]
fn an_in_process_transport_that_leaks_takes_the_host_down_at_most_three_times() {
    in_process_transport_dies("leak");
}

#[test]
fn an_in_process_transport_that_exits_takes_the_host_down_at_most_three_times() {
    in_process_transport_dies("exit");
}

/// Every fault in one host, each in its own in-process instance of `table`: the host dies at
/// most three times per poisonous message, then holds them all and delivers the rest.
fn in_process_instances_die(table: &str, provider: &str, prefix: &str) {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing(table, provider, prefix, false, "")
    ));
    let mut supervisor = Supervisor::start(&config, Some(1 << 30));
    for n in 0..20 {
        supervisor.submit("FILE:bob", &good(n));
    }
    let poisoned: Vec<(String, String)> = FAULTS
        .iter()
        .map(|fault| {
            let id = supervisor.submit("FILE:x", &poison(fault));
            (id, format!("{prefix}-{fault}"))
        })
        .collect();
    for n in 20..25 {
        supervisor.submit("FILE:bob", &good(n));
    }
    supervisor.keep_up_until("the messages are held and the rest delivered", || {
        all_held(&queue(&config), &poisoned)
            && site
                .delivered_files("files")
                .iter()
                .filter(|file| fs::read_to_string(file).is_ok_and(|m| m.contains("good")))
                .count()
                == 25
    });
    assert!(
        (1..=3 * FAULTS.len()).contains(&supervisor.deaths.len()),
        "the host died {} times:\n{}",
        supervisor.deaths.len(),
        supervisor.log()
    );
}

#[test]
fn in_process_preprocessors_that_die_take_the_host_down_at_most_three_times_per_message() {
    in_process_instances_die("preprocessor", "crashing-preprocessor", "pre");
}

#[test]
fn in_process_hooks_that_die_take_the_host_down_at_most_three_times_per_message() {
    in_process_instances_die("hook", "crashing-hook", "hook");
}

#[test]
fn in_process_transports_that_die_fetching_run_isolated_after_three_host_deaths() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    fs::write(site.path("poisoned-source"), "").unwrap();
    let config = site.write_config(&format!(
        "{FILES}{}{QUICK_RETRY}",
        crashing(
            "transport",
            "crashing-transport",
            "crash",
            false,
            ", address_type = \"{type}\", pull_poison = \"{site}/poisoned-source\""
        )
    ));
    let mut supervisor = Supervisor::start(&config, Some(1 << 30));
    supervisor.keep_up_until("every transport runs isolated", || {
        let log = supervisor_log(&config);
        FAULTS.iter().all(|fault| {
            log.contains(&format!(
                "crash-{fault}: runs isolated although the profile or its library says otherwise"
            ))
        })
    });
    assert!(
        (1..=3 * FAULTS.len()).contains(&supervisor.deaths.len()),
        "the host died {} times:\n{}",
        supervisor.deaths.len(),
        supervisor.log()
    );
    // Now isolated, their deaths no longer take the host with them, and mail flows.
    let deaths = supervisor.deaths.len();
    for n in 0..20 {
        supervisor.submit("FILE:bob", &good(n));
    }
    supervisor.keep_up_until("the mail is delivered", || {
        site.delivered_files("files").len() == 20
    });
    assert_eq!(supervisor.deaths.len(), deaths, "{}", supervisor.log());
}

fn supervisor_log(config: &Path) -> String {
    fs::read_to_string(config.with_file_name("host.log")).unwrap_or_default()
}

#[test]
fn an_isolated_call_that_hangs_is_abandoned_at_its_timeout_and_its_process_killed() {
    let site = Site::new();
    site.providers()
        .add_library("fixture-misbehaving-transport");
    let config = site.write_config(&format!(
        "{FILES}\n[[transport]]\nprovider = \"hanging\"\ntimeout = \"2s\"\nisolate = true\n{QUICK_RETRY}"
    ));
    let host = Host::start(&config, "host.log");
    let stuck = host.submit(&["HANG:alice"], "Subject: to a hung server\r\n\r\nx\r\n");
    let other = host.submit(&["FILE:bob"], "Subject: meanwhile\r\n\r\nx\r\n");
    wait_until(PATIENTLY, "the hung process is killed", || {
        host.log().contains(&format!(
            "did not answer within 2s (its timeout) and was killed during submit of message {stuck}"
        ))
    });
    assert_eq!(host.show(&other)["folder"], "Sent Items");
    let row = status_row(&host, "hanging");
    assert!(row["isolated"]["restarts"].as_u64().unwrap() >= 1, "{row}");
    // A hang is not a crash: the message is deferred, never marked.
    assert!(
        !host
            .log()
            .contains(&format!("crash 1 of 3 before message {stuck}")),
        "{}",
        host.log()
    );
    assert_host_survived(&host);
}

#[test]
fn isolated_providers_cannot_tell_calls_notices_inbound_mail_and_changes_all_cross() {
    let site = Site::new();
    let config = site.write_config(&format!(
        r#"
[[transport]]
provider = "directory"
name = "files"
isolate = true
config = {{ path = "{{site}}/files", address_type = "FILE", pickup = "{{site}}/pickup" }}

[[preprocessor]]
provider = "distribution-lists"
name = "lists"
isolate = true
config = {{ lists = {{ "FILE:team" = ["FILE:ann", "FILE:bob"] }} }}

[[hook]]
provider = "rules"
name = "sorting"
isolate = true
config = {{ rule = [{{ field = "subject", contains = "apollo", action = "move", folder = "Projects" }}] }}
{QUICK_RETRY}"#
    ));
    let host = Host::start(&config, "host.log");

    // Outbound: the isolated preprocessor's changes (two members for the list) and the
    // isolated transport's answers.
    let id = host.submit(&["FILE:team"], "Subject: to the team\r\n\r\nhello\r\n");
    wait_until(PATIENTLY, "both members are delivered", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let shown = host.show(&id);
    for member in ["FILE:ann", "FILE:bob"] {
        let recipient = shown["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["address"] == member)
            .unwrap_or_else(|| panic!("{member} was not added: {shown}"));
        assert_eq!(recipient["state"], "delivered", "{recipient}");
    }
    let delivered = site.delivered_files("files");
    assert!(fs::read_to_string(&delivered[0])
        .unwrap()
        .contains("Subject: to the team\r\n\r\nhello\r\n"));

    // Inbound: the transport's watcher thread tells the host through the events socket, the
    // host pulls the content back, the isolated hook moves it, and the file is acknowledged.
    let watcher = host.watch();
    let inbound = "From: Carol <carol@example.org>\r\nSubject: apollo launch\r\n\r\nT-10.\r\n";
    site.drop_message("pickup", "0001.eml", inbound);
    let event = watcher.next(PATIENTLY);
    assert_eq!(event["folder"], "Projects", "{event}");
    assert_eq!(host.show(event["id"].as_str().unwrap())["content"], inbound);
    wait_until(PATIENTLY, "the pickup file is acknowledged", || {
        fs::read_dir(site.path("pickup")).unwrap().count() == 0
    });

    for instance in ["files", "lists", "sorting"] {
        let row = status_row(&host, instance);
        assert_eq!(row["state"], "online", "{row}");
        assert_eq!(
            row["isolated"]["pids"].as_array().unwrap().len(),
            1,
            "{row}"
        );
        assert_eq!(row["isolated"]["restarts"], 0, "{row}");
    }
    // The providers' own log records reach the host's log.
    assert!(host.log().contains("transport_directory"), "{}", host.log());
}

#[test]
fn a_child_killed_between_calls_is_replaced_without_blaming_the_next_message() {
    let site = Site::new();
    site.providers().add_library("fixture-crashing");
    let config = site.write_config(&format!(
        "[[transport]]\nprovider = \"crashing-transport\"\nname = \"crasher\"\nisolate = true\n\
         config = {{ fault = \"segfault\" }}\n{QUICK_RETRY}"
    ));
    let host = Host::start(&config, "host.log");
    let first = host.submit(&["CRASH:a"], &good(1));
    wait_until(PATIENTLY, "the first is delivered", || {
        host.show(&first)["folder"] == "Sent Items"
    });
    let row = status_row(&host, "crasher");
    let pid = row["isolated"]["pids"][0].as_i64().unwrap() as i32;
    // SAFETY: kill has no memory-safety preconditions; the pid is the host's child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(200));

    let second = host.submit(&["CRASH:b"], &good(2));
    wait_until(PATIENTLY, "a fresh child delivers the next", || {
        host.show(&second)["folder"] == "Sent Items"
    });
    let log = host.log();
    assert!(
        log.contains(&format!(
            "its process (pid {pid}) had ended (was killed by signal 9 (SIGKILL"
        )),
        "{log}"
    );
    assert!(!log.contains("crash 1 of 3"), "{log}");
}
