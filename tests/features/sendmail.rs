//! The binary as a sendmail drop-in, driven by its real callers: cron's exact invocation,
//! s-nail and git send-email with the binary as their MTA, `sendmail`, `mailq` and
//! `newaliases` by name with sendmail's exit codes, other users through the public socket,
//! `sendmail -bs`, and the alias table an operator writes.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use spooler_tests::{host_binary, real_server, wait_until, Host, Site, PROMPTLY};

use crate::common::PICKUP;

/// A directory transport `files` for FILE mail; a long retry, so only a flush retries.
const FILES: &str = r#"
[[transport]]
provider = "directory"
name = "files"
config = { path = "{site}/files" }

[retry]
min_delay = "1h"
max_delay = "1h"
"#;

/// The message Debian's cron pipes to `sendmail -FCronDaemon -i -B8BITMIME -oem root`.
const CRON_MAIL: &str = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@buildhost> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\nbackup: 3 files copied\n";

/// The binary linked as `sendmail`, `mailq` and `newaliases` in the site's folder, as an
/// operator links it into /usr/sbin and /usr/bin, reaching the host through
/// `$SPOOLER_CONFIG`.
struct Mta {
    folder: PathBuf,
    config: PathBuf,
}

impl Mta {
    fn new(site: &Site, config: &Path) -> Mta {
        let folder = site.path("bin");
        fs::create_dir_all(&folder).unwrap();
        for name in ["sendmail", "mailq", "newaliases"] {
            std::os::unix::fs::symlink(host_binary(), folder.join(name)).unwrap();
        }
        Mta {
            folder,
            config: config.to_owned(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.folder.join(name)
    }

    /// Runs `command` with the binary's links first in PATH and the profile in the
    /// environment, `input` on its standard input.
    fn run(&self, mut command: Command, input: &str) -> Output {
        let path = format!(
            "{}:{}",
            self.folder.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = command
            .env("SPOOLER_CONFIG", &self.config)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs one of the links with `args`.
    fn invoke(&self, name: &str, args: &[&str], input: &str) -> Output {
        let mut command = Command::new(self.path(name));
        command.args(args);
        self.run(command, input)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} exited {:?}: {}{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The subjects of the messages in a folder.
fn subjects(host: &Host, folder: &str) -> Vec<String> {
    host.list(folder)
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn crons_invocation_for_root_lands_in_local_root_with_no_configuration() {
    let site = Site::new();
    let host = Host::start(&site.write_config("aliases = \"\"\n"), "host.log");
    let mta = Mta::new(&site, host.config());
    let sent = mta.invoke(
        "sendmail",
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        CRON_MAIL,
    );
    assert_success(&sent, "cron's sendmail");
    assert_eq!(text(&sent.stdout), "", "sendmail prints nothing on success");
    wait_until(PROMPTLY, "the cron mail is in Local/root", || {
        !host.list("Local/root").is_empty()
    });
    assert_eq!(
        subjects(&host, "Local/root"),
        ["Cron <root@buildhost> /usr/local/bin/backup"]
    );
    let content = &host.contents("Local/root")[0];
    assert!(content.contains("From: root (Cron Daemon)\n"), "{content}");
    assert!(
        !content.contains("CronDaemon"),
        "-F adds no second From: {content}"
    );
    // Without a From of its own, -F's name goes into one.
    let sent = mta.invoke(
        "sendmail",
        &["-F", "Backup Job", "-f", "backup@example.org", "root"],
        "Subject: nightly\n\ndone\n",
    );
    assert_success(&sent, "sendmail -F");
    wait_until(PROMPTLY, "the second message is in Local/root", || {
        host.list("Local/root").len() == 2
    });
    let contents = host.contents("Local/root");
    assert!(
        contents
            .iter()
            .any(|c| c.contains("From: Backup Job <backup@example.org>\n")),
        "{contents:?}"
    );
}

#[test]
fn aliases_redirect_local_names_recursively_and_reports_name_the_original() {
    let site = Site::new();
    let aliases = site.path("aliases");
    fs::write(
        &aliases,
        "# who reads mail for whom\npostmaster: root\nroot: admin,\n\tFILE:ops\n\
         admin: admin, |/usr/bin/procmail\nbroken line\n",
    )
    .unwrap();
    let host = Host::start(
        &site.write_config(&format!("aliases = \"{}\"\n{FILES}", aliases.display())),
        "host.log",
    );
    let mta = Mta::new(&site, host.config());

    let verified = mta.invoke("sendmail", &["-bv", "postmaster", "nobody"], "");
    assert_success(&verified, "sendmail -bv");
    assert_eq!(
        text(&verified.stdout),
        "postmaster... deliverable: FILE:ops, via files\n\
         postmaster... deliverable: LOCAL:admin, into the store\n\
         nobody... deliverable: LOCAL:nobody, into the store\n"
    );
    let undeliverable = mta.invoke("sendmail", &["-bv", "SMTP:x@example.org"], "");
    assert_eq!(undeliverable.status.code(), Some(67), "EX_NOUSER");
    assert!(text(&undeliverable.stdout).contains("no transport claims address type SMTP"));

    let rebuilt = mta.invoke("newaliases", &[], "");
    assert_success(&rebuilt, "newaliases");
    assert_eq!(
        text(&rebuilt.stdout),
        format!("{}: 3 aliases\n", aliases.display())
    );
    assert!(
        text(&rebuilt.stderr).contains(&format!(
            "{}:6: `broken line` is not `name: target, …`",
            aliases.display()
        )),
        "{}",
        text(&rebuilt.stderr)
    );

    let sent = mta.invoke(
        "sendmail",
        &["-N", "success", "postmaster"],
        "Subject: disk full\n\n/var is at 99%\n",
    );
    assert_success(&sent, "sendmail postmaster");
    wait_until(PROMPTLY, "admin's copy and the file are delivered", || {
        host.list("Local/admin").len() == 1 && site.delivered_files("files").len() == 1
    });
    // The delivery report about the file names the address the sender wrote.
    wait_until(
        PROMPTLY,
        "the report about FILE:ops is in the Inbox",
        || {
            host.contents("Inbox").iter().any(|report| {
                report.contains(
                    "Original-Recipient: rfc822; postmaster\r\nFinal-Recipient: x-file; ops",
                )
            })
        },
    );
    assert!(host
        .log()
        .contains("the command `|/usr/bin/procmail` refused"));

    // The file changes: the next submission reads it again, no restart, no signal.
    fs::write(&aliases, "postmaster: carol\n").unwrap();
    let verified = mta.invoke("sendmail", &["-bv", "postmaster"], "");
    assert_eq!(
        text(&verified.stdout),
        "postmaster... deliverable: LOCAL:carol, into the store\n"
    );
}

#[test]
fn mailq_lists_the_queue_as_postfix_does_and_q_flushes_it() {
    let site = Site::new();
    let host = Host::start(
        &site.write_config(&format!("aliases = \"\"\n{FILES}")),
        "host.log",
    );
    let mta = Mta::new(&site, host.config());
    assert_eq!(
        text(&mta.invoke("mailq", &[], "").stdout),
        "Mail queue is empty\n"
    );
    // A file where the folder should be: the delivery is deferred.
    fs::remove_dir_all(site.path("files")).unwrap();
    fs::write(site.path("files"), "not a folder").unwrap();
    let sent = mta.invoke(
        "sendmail",
        &["-f", "backup@example.org", "FILE:tape", "FILE:disk"],
        "Subject: nightly\n\nok\n",
    );
    assert_success(&sent, "sendmail");
    wait_until(PROMPTLY, "the delivery is deferred", || {
        text(&mta.invoke("mailq", &[], "").stdout).contains("(deferred by files")
    });
    let listing = text(&mta.invoke("mailq", &[], "").stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines[0],
        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    );
    assert!(
        lines[1].ends_with("  backup@example.org") && lines[1].starts_with("00000000000000"),
        "{listing}"
    );
    assert!(
        lines[2].starts_with("(deferred by files: "),
        "the reason, in parentheses: {listing}"
    );
    assert_eq!(lines[3], format!("{:41}FILE:tape", ""), "{listing}");
    assert_eq!(lines[4], format!("{:41}FILE:disk", ""), "{listing}");
    assert_eq!(lines[6], "-- 1 Kbytes in 1 Request.", "{listing}");
    assert_eq!(
        text(&mta.invoke("sendmail", &["-bp"], "").stdout),
        listing,
        "sendmail -bp is mailq"
    );

    fs::remove_file(site.path("files")).unwrap();
    fs::create_dir(site.path("files")).unwrap();
    assert_success(&mta.invoke("sendmail", &["-q"], ""), "sendmail -q");
    wait_until(PROMPTLY, "the flush delivered it", || {
        site.delivered_files("files").len() == 1
    });
    wait_until(PROMPTLY, "the queue is empty", || {
        text(&mta.invoke("mailq", &[], "").stdout) == "Mail queue is empty\n"
    });
}

#[test]
fn s_nail_sends_with_the_binary_as_its_mta() {
    let Some(s_nail) = real_server("s-nail") else {
        return;
    };
    let site = Site::new();
    let host = Host::start(&site.write_config("aliases = \"\"\n"), "host.log");
    let mta = Mta::new(&site, host.config());
    let mut command = Command::new(s_nail);
    command.args(["-:/", "-S", "sendwait", "-S"]);
    command.arg(format!("mta={}", mta.path("sendmail").display()));
    command.args(["-s", "Grüße from s-nail", "root"]);
    let sent = mta.run(command, "Hello from a mail program.\n");
    assert_success(&sent, "s-nail");
    wait_until(PROMPTLY, "the message is in Local/root", || {
        !host.list("Local/root").is_empty()
    });
    assert_eq!(subjects(&host, "Local/root").len(), 1);
    assert!(host.contents("Local/root")[0].contains("Hello from a mail program."));
}

#[test]
fn git_send_email_sends_a_patch_through_the_binary() {
    let git = Path::new("/usr/bin/git");
    if !Path::new("/usr/lib/git-core/git-send-email").exists() {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "git send-email is missing (.ci/run installs git-email)"
        );
        eprintln!("SKIPPED: git send-email is not installed (apt-get install git-email)");
        return;
    }
    let site = Site::new();
    let host = Host::start(&site.write_config("aliases = \"\"\n"), "host.log");
    let mta = Mta::new(&site, host.config());
    let repository = site.path("repository");
    fs::create_dir(&repository).unwrap();
    let git_in = |args: &[&str]| {
        let mut command = Command::new(git);
        command
            .current_dir(&repository)
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.org"])
            .args(args);
        command
    };
    fs::write(
        repository.join("frobnicator.c"),
        "int frobnicate(void) { return 42; }\n",
    )
    .unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "frobnicator.c"],
        &["commit", "-q", "-m", "Fix the frobnicator"],
        &["format-patch", "-q", "-1", "-o", "patches"],
    ] {
        assert_success(&mta.run(git_in(args), ""), "git");
    }
    let patch = fs::read_dir(repository.join("patches"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut send = git_in(&["send-email", "--confirm=never", "--to=root"]);
    send.arg(format!("--smtp-server={}", mta.path("sendmail").display()))
        .arg(patch);
    assert_success(&mta.run(send, ""), "git send-email");
    wait_until(PROMPTLY, "the patch is in Local/root", || {
        !host.list("Local/root").is_empty()
    });
    assert_eq!(
        subjects(&host, "Local/root"),
        ["[PATCH] Fix the frobnicator"]
    );
}

#[test]
fn other_users_submit_through_the_public_socket_and_may_only_submit_list_and_flush() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: running a client as another user needs root");
        return;
    }
    let site = Site::new();
    let public = site.path("run/submit.sock");
    let host = Host::start(
        &site.write_config(&format!(
            "aliases = \"\"\n[submission]\npublic_socket = \"{}\"\n",
            public.display()
        )),
        "host.log",
    );
    // A copy of the binary anyone may run, as /usr/sbin/sendmail is.
    let sendmail = site.path("sendmail");
    fs::copy(host_binary(), &sendmail).unwrap();
    let as_nobody = |args: &[&str], input: &str| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&sendmail)
            .args(args)
            .env("USER", "root");
        Mta {
            folder: site.path("bin"),
            config: host.config().to_owned(),
        }
        .run(command, input)
    };
    let sent = as_nobody(&["root"], "Subject: from a cron job of nobody\n\nhi\n");
    assert_success(&sent, "nobody's sendmail");
    wait_until(PROMPTLY, "nobody's mail is in Local/root", || {
        !host.list("Local/root").is_empty()
    });
    assert_eq!(
        host.list("Local/root")[0]["sender"].as_str(),
        Some("LOCAL:nobody"),
        "the sender is the user who ran sendmail, whatever $USER says"
    );
    assert!(host
        .log()
        .contains("from a client of uid 65534 on the public socket"));
    assert_eq!(
        text(&as_nobody(&["-bp"], "").stdout),
        "Mail queue is empty\n"
    );
    let mut status = Command::new("setpriv");
    status
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&sendmail)
        .args(["status", "--config"])
        .arg(host.config());
    let refused = status.output().unwrap();
    assert!(
        !refused.status.success(),
        "the control socket is not theirs"
    );
}

#[test]
fn sendmail_bs_speaks_smtp_on_standard_input_and_output() {
    let site = Site::new();
    let host = Host::start(&site.write_config("aliases = \"\"\n"), "host.log");
    let mta = Mta::new(&site, host.config());
    let dialogue = "EHLO client.example\r\nMAIL FROM:<app@example.org>\r\nRCPT TO:<root>\r\n\
                    RCPT TO:<not an address>\r\nDATA\r\nSubject: via -bs\r\n\r\nhello\r\n.\r\n\
                    QUIT\r\n";
    let session = mta.invoke("sendmail", &["-bs"], dialogue);
    assert_success(&session, "sendmail -bs");
    let replies = text(&session.stdout);
    let codes: Vec<&str> = replies
        .lines()
        .filter(|line| line.as_bytes().get(3) == Some(&b' '))
        .map(|line| &line[..3])
        .collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "553", "354", "250", "221"],
        "{replies}"
    );
    wait_until(PROMPTLY, "the message is in Local/root", || {
        !host.list("Local/root").is_empty()
    });
    assert_eq!(subjects(&host, "Local/root"), ["via -bs"]);
    assert_eq!(
        host.list("Local/root")[0]["sender"].as_str(),
        Some("SMTP:app@example.org")
    );
}

#[test]
fn the_binary_invoked_as_sendmail_submits_with_sendmails_exit_codes() {
    let site = Site::new();
    let host = Host::start(&site.write_config(PICKUP), "host.log");
    let sendmail = site.path("sendmail");
    std::os::unix::fs::symlink(host_binary(), &sendmail).unwrap();
    let config = host.config().to_owned();
    let run = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new(&sendmail)
            .args(args)
            .env("SPOOLER_CONFIG", &config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let sent = run(&["-oi", "FILE:bob"], "Subject: from cron\n\nDone.\n");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(
        run(&["-Q"], "").status.code(),
        Some(64),
        "EX_USAGE for a bad option"
    );
    assert_eq!(
        run(&["not an address"], "Subject: x\n\ny\n").status.code(),
        Some(67),
        "EX_NOUSER for a bad recipient"
    );
    wait_until(PROMPTLY, "it is delivered", || {
        site.delivered_files("files").len() == 1
    });
    drop(host);
    assert_eq!(
        run(&["FILE:bob"], "Subject: x\n\ny\n").status.code(),
        Some(69),
        "EX_UNAVAILABLE when the spooler is down"
    );
}

#[test]
fn submit_adds_from_and_date_where_a_message_has_none_and_names_itself_in_errors() {
    let site = Site::new();
    let host = Host::start(&site.write_config("aliases = \"\"\n"), "host.log");
    host.submit(
        &["-f", "app@example.org", "LOCAL:bob"],
        "Subject: bare\r\n\r\nNo From, no Date.\r\n",
    );
    host.submit(
        &["LOCAL:bob"],
        "From: Ann <ann@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
         Subject: whole\r\n\r\nBoth.\r\n",
    );
    wait_until(PROMPTLY, "both messages are in Local/bob", || {
        host.list("Local/bob").len() == 2
    });
    let contents = host.contents("Local/bob");
    let with = |subject: &str| {
        contents
            .iter()
            .find(|content| content.contains(subject))
            .unwrap_or_else(|| panic!("no {subject:?} in {contents:#?}"))
    };
    let fields = |content: &str, name: &str| -> Vec<String> {
        content
            .lines()
            .take_while(|line| !line.is_empty())
            .filter_map(|line| line.strip_prefix(name).map(str::to_owned))
            .collect()
    };
    // Without them: From is the sender, Date is now (RFC 5322, in UTC).
    let bare = with("Subject: bare");
    assert_eq!(fields(bare, "From: "), ["app@example.org"], "{bare}");
    let date = fields(bare, "Date: ");
    assert!(
        date.len() == 1 && date[0].ends_with(" +0000") && date[0].contains(", "),
        "{bare}"
    );
    // With them: kept, and none added.
    let whole = with("Subject: whole");
    assert_eq!(
        fields(whole, "From: "),
        ["Ann <ann@example.org>"],
        "{whole}"
    );
    assert_eq!(
        fields(whole, "Date: "),
        ["Mon, 1 Jan 2024 00:00:00 +0000"],
        "{whole}"
    );

    let refused = host.submit_with_status(&["-bv"], "");
    assert_eq!(refused.code, Some(64), "{}", refused.stderr);
    assert_eq!(
        refused.stderr.trim(),
        "spooler-host submit: -bv: name the addresses to verify"
    );
}
