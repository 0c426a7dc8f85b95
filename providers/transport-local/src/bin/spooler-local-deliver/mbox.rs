//! Appending to an mbox file in `/var/mail`, locked the way `mail`, `mutt` and `s-nail`
//! lock it: a dot-lock file (`NAME.lock`) and then an `fcntl` lock on the mailbox. A
//! delivery that fails part-way is cut back off, so a reader never sees half a message.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use crate::account::Account;
use crate::format::{envelope_headers, from_line, unix_lines};
use crate::Failure;

/// How long a delivery waits for a reader to let go of the mailbox before it gives up and
/// the host tries again later (Postfix: 20 attempts a second apart).
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// How often a taken lock is tried again.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// A dot-lock older than this was left by a program that died: it is removed (procmail's
/// and mutt's rule).
const STALE_LOCK: Duration = Duration::from_secs(300);

/// Appends `message` from `sender` to `mailbox`, the mbox of `account`, unless that takes
/// it over `limit` bytes. Runs as the account, in group `mail`.
pub fn deliver(
    mailbox: &Path,
    account: &Account,
    sender: &str,
    message: &[u8],
    limit: u64,
    now: Duration,
) -> Result<(), Failure> {
    let deadline = Instant::now() + LOCK_WAIT;
    let _dotlock = DotLock::take(mailbox, deadline)?;
    let file = open_mailbox(mailbox, account)?;
    lock_whole_file(&file, mailbox, deadline)?;
    let size = file
        .metadata()
        .map_err(|error| Failure::writing(mailbox, &error))?
        .len();
    let mut entry = Vec::new();
    if size > 0 && !ends_with_blank_line(&file, size) {
        entry.push(b'\n');
    }
    entry.extend_from_slice(from_line(sender, now).as_bytes());
    entry.extend_from_slice(envelope_headers(sender, &account.name).as_bytes());
    entry.extend_from_slice(&unix_lines(message, true));
    entry.push(b'\n');
    let grown = size + entry.len() as u64;
    if entry.len() as u64 > limit {
        return Err(Failure::too_large(entry.len(), limit, mailbox));
    }
    if grown > limit {
        return Err(Failure::temporary(
            "4.2.2",
            format!(
                "mailbox {} is full: {size} bytes, {grown} with this message, over its limit \
                 of {limit} bytes",
                mailbox.display()
            ),
        ));
    }
    if let Err(error) = (&file).write_all(&entry).and_then(|()| file.sync_data()) {
        // Nothing half-written stays behind for a reader to find.
        let _ = file.set_len(size).and_then(|()| file.sync_data());
        return Err(Failure::writing(mailbox, &error));
    }
    Ok(())
}

/// Opens the mailbox to append, creating it (mode 0600) if missing, and refuses one that is
/// a symbolic link, not a regular file, not the account's, or linked elsewhere too: each
/// is how a mailbox is turned against another file.
fn open_mailbox(mailbox: &Path, account: &Account) -> Result<File, Failure> {
    let refused = |why: &str| {
        Failure::temporary(
            "4.3.0",
            format!(
                "mailbox {} {why}; refused (move it aside to have it created again)",
                mailbox.display()
            ),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(mailbox)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => refused("is a symbolic link"),
            _ => Failure::writing(mailbox, &error),
        })?;
    let metadata = file
        .metadata()
        .map_err(|error| Failure::writing(mailbox, &error))?;
    if !metadata.is_file() {
        return Err(refused("is not a regular file"));
    }
    if metadata.uid() != account.uid {
        return Err(refused(&format!(
            "belongs to uid {}, not to {}",
            metadata.uid(),
            account.name
        )));
    }
    if metadata.nlink() != 1 {
        return Err(refused("has more than one name (a hard link)"));
    }
    Ok(file)
}

/// Whether the mailbox's last message ends with the blank line that must come before the
/// next `From ` line.
fn ends_with_blank_line(file: &File, size: u64) -> bool {
    let mut tail = [0u8; 2];
    let start = size.saturating_sub(2);
    let read = file.read_at(&mut tail, start).unwrap_or(0);
    tail[..read].ends_with(b"\n\n") || (size == 1 && tail[0] == b'\n')
}

/// Takes the `fcntl` write lock on the whole mailbox, waiting until `deadline`.
fn lock_whole_file(file: &File, mailbox: &Path, deadline: Instant) -> Result<(), Failure> {
    loop {
        // SAFETY: a zeroed flock is valid; the fields that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fcntl on an open descriptor with a valid flock.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            return Err(Failure::temporary(
                "4.3.0",
                format!("cannot lock {}: {error}", mailbox.display()),
            ));
        }
        if Instant::now() >= deadline {
            return Err(busy(mailbox, "its fcntl lock"));
        }
        sleep(LOCK_RETRY);
    }
}

fn busy(mailbox: &Path, what: &str) -> Failure {
    Failure::temporary(
        "4.2.0",
        format!(
            "mailbox {} is locked by a reader ({what}) for over {} s; trying again later",
            mailbox.display(),
            LOCK_WAIT.as_secs()
        ),
    )
}

/// `NAME.lock` beside the mailbox, held while it exists; removed when dropped.
struct DotLock(PathBuf);

impl DotLock {
    fn take(mailbox: &Path, deadline: Instant) -> Result<DotLock, Failure> {
        let mut path = mailbox.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        loop {
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match created {
                Ok(_) => return Ok(DotLock(path)),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(&path) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                }
                Err(error) => {
                    return Err(Failure::temporary(
                        "4.3.0",
                        format!("cannot create the lock file {}: {error}", path.display()),
                    ))
                }
            }
            if Instant::now() >= deadline {
                return Err(busy(mailbox, "its .lock file"));
            }
            sleep(LOCK_RETRY);
        }
    }
}

/// Whether the lock file at `path` is older than [`STALE_LOCK`].
fn is_stale(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|at| {
            SystemTime::now()
                .duration_since(at)
                .is_ok_and(|age| age > STALE_LOCK)
        })
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
