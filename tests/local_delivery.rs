//! Local delivery as the mail programs see it: cron's mail, sent with cron's exact
//! `sendmail` invocation, read with `s-nail` by root and by an ordinary user from
//! `/var/mail` (mbox) and from `~/Maildir`, with the host running as an unprivileged user and
//! the helper installed setuid root, as the README says; and everything the helper must
//! refuse.
//!
//! These tests change the machine: they create users (`spl-*`, and the system user
//! `spl-host` that runs the host), write into `/var/mail` and into those users' homes. They
//! need root and skip without it (they fail instead under `SPOOLER_REQUIRE_SERVERS=1`, as
//! `.ci/run` sets it). They are a test binary of their own, apart from `features`, for that
//! reason.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use spooler_tests::{build_folder, real_server, set_mode, wait_until, Host, Site, PROMPTLY};

/// The message Debian's cron pipes to `sendmail -FCronDaemon -i -B8BITMIME -oem USER`.
fn cron_mail(user: &str, subject: &str) -> String {
    format!(
        "From: root (Cron Daemon)\nTo: {user}\nSubject: {subject}\nMIME-Version: 1.0\n\
         Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\
         X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\n\
         From the backup job: 3 files copied\n"
    )
}

/// A subject no earlier run used (root's mailbox outlives the tests).
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what} {}", nanos % 1_000_000_000)
}

/// A user of this machine.
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl Account {
    /// User `name`, created if missing: an ordinary user with a home, or a system user.
    fn ensure(name: &str, system: bool) -> Account {
        // useradd locks /etc/passwd; tests running side by side take turns.
        static USERADD: Mutex<()> = Mutex::new(());
        let _turn = USERADD.lock().unwrap_or_else(|e| e.into_inner());
        if Account::find(name).is_none() {
            let mut command = Command::new("useradd");
            if system {
                command.args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ]);
            } else {
                command.args(["--create-home", "--shell", "/bin/sh"]);
            }
            let status = command.arg(name).status().expect("useradd runs");
            assert!(status.success(), "useradd {name} failed");
        }
        Account::find(name).expect("created just above")
    }

    fn find(name: &str) -> Option<Account> {
        let output = Command::new("getent")
            .args(["passwd", name])
            .output()
            .ok()?;
        let line = String::from_utf8(output.stdout).ok()?;
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        (fields.len() == 7).then(|| Account {
            name: name.to_owned(),
            uid: fields[2].parse().unwrap(),
            gid: fields[3].parse().unwrap(),
            home: PathBuf::from(fields[5]),
        })
    }

    fn mbox(&self) -> PathBuf {
        Path::new("/var/mail").join(&self.name)
    }

    /// Runs `program` as this user, with a login's environment and nothing else.
    fn run(&self, program: &Path, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--init-groups", "--", "env", "-i"])
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.name))
            .arg(format!("LOGNAME={}", self.name))
            .args(["PATH=/usr/bin:/bin", "COLUMNS=300"]);
        for (key, value) in env {
            command.arg(format!("{key}={value}"));
        }
        let mut child = command
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv runs");
        // A program that refuses before it reads its input closes the pipe first: that
        // is an answer, not a failure of the test.
        match child.stdin.take().unwrap().write_all(input.as_bytes()) {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("cannot write to {}: {error}", program.display())
            }
            _ => {}
        }
        child.wait_with_output().unwrap()
    }

    /// `s-nail` run by this user on its own mailbox (or on `folder`): `-e` says whether
    /// there is mail, `-H` lists the headers.
    fn s_nail(&self, args: &[&str]) -> Output {
        self.run(
            Path::new("/usr/bin/s-nail"),
            &[&["-:/"], args].concat(),
            "",
            &[],
        )
    }

    /// Removes its mailboxes, so that a test starts from none.
    fn clear_mailboxes(&self) {
        let _ = fs::remove_file(self.mbox());
        let _ = fs::remove_dir_all(self.home.join("Maildir"));
    }
}

/// Whether these tests can run here: as root, with s-nail installed.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("SPOOLER_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "local delivery tests need root, and SPOOLER_REQUIRE_SERVERS=1 says they must run"
        );
        eprintln!("SKIPPED: local delivery tests create users and need root");
        return false;
    }
    real_server("s-nail").is_some()
}

/// A site laid out as the README's "Local mailboxes" installs it: the host's binary and
/// the helper in `bin/` (the helper root-owned, setuid, executable only by the host's
/// group), the host running as the system user `spl-host`.
struct LocalSite {
    site: Site,
    host: Host,
    host_user: Account,
}

impl LocalSite {
    /// Starts the host with a local transport configured by `transport` (a TOML inline
    /// table's inside) and the alias file `aliases`.
    fn start(transport: &str, aliases: &str) -> LocalSite {
        let host_user = Account::ensure("spl-host", true);
        let site = Site::with_providers(&["store-embedded", "transport-local"]);
        let bin = site.path("bin");
        fs::create_dir(&bin).unwrap();
        set_mode(&bin, 0o755);
        fs::copy(
            build_folder().join("spooler-host"),
            bin.join("spooler-host"),
        )
        .unwrap();
        set_mode(&bin.join("spooler-host"), 0o755);
        std::os::unix::fs::symlink("spooler-host", bin.join("sendmail")).unwrap();
        let helper = bin.join("spooler-local-deliver");
        fs::copy(build_folder().join("spooler-local-deliver"), &helper).unwrap();
        std::os::unix::fs::chown(&helper, Some(0), Some(host_user.gid)).unwrap();
        set_mode(&helper, 0o4750);
        for folder in ["data", "run"] {
            fs::create_dir(site.path(folder)).unwrap();
            std::os::unix::fs::chown(site.path(folder), Some(host_user.uid), Some(host_user.gid))
                .unwrap();
        }
        fs::write(site.path("aliases"), aliases).unwrap();
        let config = site.write_config(&format!(
            "aliases = \"{{site}}/aliases\"\n\
             [submission]\npublic_socket = \"{{site}}/run/submit.sock\"\n\
             [[transport]]\nprovider = \"local\"\nconfig = {{ {transport} }}\n"
        ));
        let host = Host::start_as(
            &bin.join("spooler-host"),
            host_user.uid,
            host_user.gid,
            &config,
            "host.log",
        );
        LocalSite {
            site,
            host,
            host_user,
        }
    }

    fn helper(&self) -> PathBuf {
        self.site.path("bin/spooler-local-deliver")
    }

    /// Cron's exact invocation of `sendmail`, run by `user` (cron runs the mailer as the
    /// crontab's owner), mailing `to` the output of a job.
    fn cron_sends(&self, user: &Account, to: &str, subject: &str) {
        let config = self.host.config().display().to_string();
        let sent = user.run(
            &self.site.path("bin/sendmail"),
            &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", to],
            &cron_mail(to, subject),
            &[("SPOOLER_CONFIG", &config)],
        );
        assert!(
            sent.status.success(),
            "cron's sendmail as {}: {}\n{}",
            user.name,
            String::from_utf8_lossy(&sent.stderr),
            self.host.log()
        );
    }

    /// Waits until `mailbox` holds `text`.
    fn wait_for(&self, mailbox: &Path, text: &str) {
        wait_until(
            PROMPTLY,
            &format!("{text} in {}", mailbox.display()),
            || fs::read_to_string(mailbox).is_ok_and(|content| content.contains(text)),
        );
    }
}

/// Every file under `folder` (a Maildir's `new/`), read.
fn files_in(folder: &Path) -> Vec<(PathBuf, String)> {
    fs::read_dir(folder)
        .map(|entries| {
            entries
                .map(|entry| {
                    let path = entry.unwrap().path();
                    let text = fs::read_to_string(&path).unwrap();
                    (path, text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn crons_mail_is_read_with_s_nail_from_var_mail_by_root_and_by_an_ordinary_user() {
    if !can_run() {
        return;
    }
    let root = Account::find("root").unwrap();
    let alice = Account::ensure("spl-alice", false);
    alice.clear_mailboxes();
    let local = LocalSite::start("format = \"mbox\"", "");
    let status = fs::read_to_string(format!("/proc/{}/status", local.host.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|uid| uid == local.host_user.uid.to_string()),
        "the host runs unprivileged: {uid_line}"
    );

    let for_root = unique("root job");
    let for_alice = unique("alice job");
    local.cron_sends(&root, "root", &for_root);
    local.cron_sends(&alice, "spl-alice", &for_alice);
    local.wait_for(&root.mbox(), &for_root);
    local.wait_for(&alice.mbox(), &for_alice);

    let metadata = fs::metadata(alice.mbox()).unwrap();
    assert_eq!(
        (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777),
        (alice.uid, 8, 0o600),
        "alice's mbox is hers, in group mail, mode 0600"
    );
    let mbox = fs::read_to_string(alice.mbox()).unwrap();
    assert!(mbox.starts_with("From spl-alice "), "{mbox}");
    assert!(
        mbox.contains("\nDelivered-To: spl-alice\n") && mbox.contains("\n>From the backup job"),
        "the envelope in front, a body line quoted: {mbox}"
    );
    assert!(
        local.host.list("Local/spl-alice").is_empty(),
        "not in the store"
    );

    for (user, subject) in [(&alice, &for_alice), (&root, &for_root)] {
        let has_mail = user.s_nail(&["-e"]);
        assert!(has_mail.status.success(), "s-nail -e as {}", user.name);
        let headers = user.s_nail(&["-H"]);
        assert!(
            text(&headers.stdout).contains(subject.as_str()),
            "s-nail -H as {} shows {subject}: {}{}",
            user.name,
            text(&headers.stdout),
            text(&headers.stderr)
        );
    }
}

#[test]
fn crons_mail_is_read_with_s_nail_from_the_users_maildir() {
    if !can_run() {
        return;
    }
    let bob = Account::ensure("spl-bob", false);
    bob.clear_mailboxes();
    let local = LocalSite::start("format = \"maildir\"", "");
    let subject = unique("bob job");
    local.cron_sends(&bob, "spl-bob", &subject);
    let new = bob.home.join("Maildir/new");
    wait_until(PROMPTLY, "the message in bob's Maildir", || {
        files_in(&new).len() == 1
    });
    let (path, content) = files_in(&new).remove(0);
    let metadata = fs::metadata(&path).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o7777), (bob.uid, 0o600));
    assert!(
        content.contains(&format!("Subject: {subject}\n")),
        "{content}"
    );
    // The helper links the message into new/ and then removes it from tmp/: nothing stays.
    wait_until(PROMPTLY, "nothing left in bob's Maildir/tmp", || {
        files_in(&bob.home.join("Maildir/tmp")).is_empty()
    });

    let maildir = bob.home.join("Maildir").display().to_string();
    let headers = bob.s_nail(&["-H", "-f", &maildir]);
    assert!(
        text(&headers.stdout).contains(subject.as_str()),
        "s-nail -H -f ~/Maildir: {}{}",
        text(&headers.stdout),
        text(&headers.stderr)
    );
}

#[test]
fn the_helper_refuses_paths_system_accounts_unknown_users_symlinked_mailboxes_and_strangers() {
    if !can_run() {
        return;
    }
    let carol = Account::ensure("spl-carol", false);
    carol.clear_mailboxes();
    let local = LocalSite::start("format = \"mbox\"", "");
    let helper = local.helper();
    let deliver = |args: &[&str]| {
        let mut all = vec!["--mbox", "--sender", "ann@example.com"];
        all.extend_from_slice(args);
        local
            .host_user
            .run(&helper, &all, "Subject: x\n\nHello.\n", &[])
    };
    let passwd = fs::read("/etc/passwd").unwrap();

    for path in ["/etc/passwd", "../etc/passwd", "spl-carol/../../etc/passwd"] {
        let refused = deliver(&[path]);
        assert_eq!(refused.status.code(), Some(64), "{path}");
        assert!(
            text(&refused.stderr).contains("is not a user name"),
            "{path}"
        );
    }
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd, "nothing written");

    let unknown = deliver(&["spl-nobody-here"]);
    assert_eq!(unknown.status.code(), Some(67));
    assert!(text(&unknown.stderr).starts_with("5.1.1 no such user: spl-nobody-here"));

    let daemon = deliver(&["daemon"]);
    assert_eq!(daemon.status.code(), Some(77));
    assert!(text(&daemon.stderr).contains("system account"));
    assert!(!Path::new("/var/mail/daemon").exists());

    // A mailbox that is a symbolic link to another file: refused, the file untouched.
    let target = local.site.path("precious");
    fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, carol.mbox()).unwrap();
    let symlinked = deliver(&["spl-carol"]);
    assert_eq!(symlinked.status.code(), Some(75));
    assert!(
        text(&symlinked.stderr).contains("is a symbolic link; refused"),
        "{}",
        text(&symlinked.stderr)
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    fs::remove_file(carol.mbox()).unwrap();

    // The same for a Maildir.
    let elsewhere = local.site.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, carol.home.join("Maildir")).unwrap();
    let maildir = local.host_user.run(
        &helper,
        &["--maildir", "--sender", "a@b", "spl-carol"],
        "Subject: x\n\nHello.\n",
        &[],
    );
    assert_eq!(maildir.status.code(), Some(75));
    assert!(text(&maildir.stderr).contains("is a symbolic link; refused"));
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    fs::remove_file(carol.home.join("Maildir")).unwrap();

    // Only the host's group may run it at all.
    let stranger = carol.run(
        &helper,
        &["--mbox", "--sender", "a@b", "spl-carol"],
        "",
        &[],
    );
    assert!(!stranger.status.success());
    assert!(
        text(&stranger.stderr).contains("Permission denied"),
        "{}",
        text(&stranger.stderr)
    );
    assert!(!carol.mbox().exists());

    // And what it is for works: the host's user delivers for carol, as carol.
    let delivered = deliver(&["spl-carol"]);
    assert!(delivered.status.success(), "{}", text(&delivered.stderr));
    assert_eq!(fs::metadata(carol.mbox()).unwrap().uid(), carol.uid);
}

#[test]
fn mail_for_an_unknown_user_comes_back_to_the_sender_after_aliases_are_applied() {
    if !can_run() {
        return;
    }
    let root = Account::find("root").unwrap();
    let dave = Account::ensure("spl-dave", false);
    dave.clear_mailboxes();
    let local = LocalSite::start("format = \"mbox\"", "spl-formerly: spl-dave\n");
    let aliased = unique("to an alias");
    local.cron_sends(&root, "spl-formerly", &aliased);
    local.wait_for(&dave.mbox(), &aliased);

    let lost = unique("to nobody");
    local.cron_sends(&root, "spl-ghost", &lost);
    // The report, in the Inbox, tells root why, quoting the message.
    wait_until(PROMPTLY, "a non-delivery report in the Inbox", || {
        local
            .host
            .contents("Inbox")
            .iter()
            .any(|report| report.contains("no such user: spl-ghost"))
    });
    let reports = local.host.contents("Inbox");
    let report = reports
        .iter()
        .find(|report| report.contains("spl-ghost"))
        .unwrap();
    assert!(report.contains("5.1.1"), "{report}");
    assert!(
        report.contains(&lost),
        "the report quotes the message: {report}"
    );
    assert!(
        !fs::read_to_string(dave.mbox()).unwrap().contains(&lost),
        "the alias is not applied to a name it does not name"
    );
}

#[test]
fn a_full_mailbox_defers_and_a_message_larger_than_the_limit_comes_back() {
    if !can_run() {
        return;
    }
    let erin = Account::ensure("spl-erin", false);
    erin.clear_mailboxes();
    // 3,000 bytes at most; the mailbox already holds 2,500.
    let earlier = format!(
        "From ann@example.com Sun Dec  6 05:00:00 2026\nSubject: earlier\n\n{}\n\n",
        "x".repeat(2440)
    );
    fs::write(erin.mbox(), &earlier).unwrap();
    std::os::unix::fs::chown(erin.mbox(), Some(erin.uid), Some(8)).unwrap();
    set_mode(&erin.mbox(), 0o600);
    let local = LocalSite::start("mailbox_size_limit = 3000", "");

    let id = local.host.submit(
        &["LOCAL:spl-erin"],
        &format!("Subject: does not fit yet\n\n{}\n", "y".repeat(600)),
    );
    wait_until(PROMPTLY, "the delivery is deferred", || {
        local.host.show(&id)["recipients"][0]["attempts"] == 1
    });
    let recipient = &local.host.show(&id)["recipients"][0];
    assert_eq!(recipient["state"], "pending", "{recipient}");
    let answer = recipient["last_answer"].as_str().unwrap();
    assert!(
        answer.contains("4.2.2") && answer.contains("is full") && answer.contains("3000"),
        "{answer}"
    );
    assert_eq!(
        fs::read_to_string(erin.mbox()).unwrap(),
        earlier,
        "untouched"
    );

    // Erin makes room; the deferred message goes at the next attempt.
    fs::OpenOptions::new()
        .write(true)
        .open(erin.mbox())
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(local.host.command(&["flush"]).code, Some(0));
    local.wait_for(&erin.mbox(), "does not fit yet");

    let too_big = local.host.submit(
        &["LOCAL:spl-erin"],
        &format!("Subject: never fits\n\n{}\n", "z".repeat(5000)),
    );
    wait_until(PROMPTLY, "the large message fails", || {
        local.host.show(&too_big)["recipients"][0]["state"] == "failed"
    });
    let recipient = &local.host.show(&too_big)["recipients"][0];
    let answer = recipient["last_answer"].as_str().unwrap();
    assert!(
        answer.contains("larger than the mailbox size limit"),
        "{recipient}"
    );
}

/// Holds `mailbox` the way a mail reader does while it reads: its dot-lock file and an
/// `fcntl` lock; both let go when dropped.
struct ReaderLock {
    _file: fs::File,
    dotlock: PathBuf,
}

impl ReaderLock {
    fn take(mailbox: &Path) -> ReaderLock {
        let dotlock = PathBuf::from(format!("{}.lock", mailbox.display()));
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dotlock)
            .expect("the reader's dot-lock");
        let file = fs::OpenOptions::new().read(true).open(mailbox).unwrap();
        // SAFETY: a zeroed flock is valid; it asks for a read lock on the whole file.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_RDLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fcntl on an open descriptor with a valid flock.
        let locked = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
        assert_eq!(locked, 0, "the reader's fcntl lock");
        ReaderLock {
            _file: file,
            dotlock,
        }
    }
}

impl Drop for ReaderLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.dotlock);
    }
}

#[test]
fn two_deliveries_racing_a_readers_lock_wait_for_it_and_lose_nothing() {
    if !can_run() {
        return;
    }
    let root = Account::find("root").unwrap();
    let fay = Account::ensure("spl-fay", false);
    fay.clear_mailboxes();
    fs::write(fay.mbox(), "").unwrap();
    std::os::unix::fs::chown(fay.mbox(), Some(fay.uid), Some(8)).unwrap();
    set_mode(&fay.mbox(), 0o600);
    let local = LocalSite::start("format = \"mbox\"", "");

    let reader = ReaderLock::take(&fay.mbox());
    let first = unique("first");
    let second = unique("second");
    std::thread::scope(|threads| {
        threads.spawn(|| local.cron_sends(&root, "spl-fay", &first));
        threads.spawn(|| local.cron_sends(&root, "spl-fay", &second));
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fs::read_to_string(fay.mbox()).unwrap(),
        "",
        "nothing is written while the reader holds the mailbox"
    );
    drop(reader);

    local.wait_for(&fay.mbox(), &first);
    local.wait_for(&fay.mbox(), &second);
    let mbox = fs::read_to_string(fay.mbox()).unwrap();
    assert_eq!(
        mbox.matches("\nFrom root ").count() + usize::from(mbox.starts_with("From root ")),
        2,
        "two messages, each whole: {mbox}"
    );
    assert_eq!(mbox.matches(">From the backup job").count(), 2);
    assert!(!Path::new(&format!("{}.lock", fay.mbox().display())).exists());
    let headers = fay.s_nail(&["-H"]);
    let listing = text(&headers.stdout);
    assert!(
        listing.contains(first.as_str()) && listing.contains(second.as_str()),
        "{listing}"
    );
}
