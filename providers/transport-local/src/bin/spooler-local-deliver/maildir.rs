//! Delivering into `~/Maildir`: the message is written into `tmp/` under a name no other
//! delivery uses, made durable, and linked into `new/`, so a reader sees all of it or none,
//! and no lock is needed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::account::Account;
use crate::format::{envelope_headers, unix_lines};
use crate::Failure;

/// Delivers `message` from `sender` into the account's `~/Maildir` (created if missing);
/// a message over `limit` bytes is refused. Runs as the account. Returns the new file.
pub fn deliver(
    account: &Account,
    sender: &str,
    message: &[u8],
    limit: u64,
    now: Duration,
) -> Result<PathBuf, Failure> {
    let maildir = account.home.join("Maildir");
    prepare(&maildir)?;
    let mut content = envelope_headers(sender, &account.name).into_bytes();
    content.extend_from_slice(&unix_lines(message, false));
    if content.len() as u64 > limit {
        return Err(Failure::too_large(content.len(), limit, &maildir));
    }
    let name = unique_name(now);
    let aside = maildir.join("tmp").join(&name);
    let target = maildir.join("new").join(&name);
    let written = write_durably(&aside, &content)
        .and_then(|()| std::fs::hard_link(&aside, &target))
        .and_then(|()| File::open(maildir.join("new"))?.sync_all());
    let _ = std::fs::remove_file(&aside);
    written.map_err(|error| Failure::writing(&target, &error))?;
    Ok(target)
}

/// Makes sure `maildir` and its `tmp`, `new` and `cur` folders exist (mode 0700), and that
/// none of them is a symbolic link.
fn prepare(maildir: &Path) -> Result<(), Failure> {
    for folder in [
        maildir.to_owned(),
        maildir.join("tmp"),
        maildir.join("new"),
        maildir.join("cur"),
    ] {
        match std::fs::symlink_metadata(&folder) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(Failure::temporary(
                    "4.3.0",
                    format!(
                        "Maildir folder {} is a symbolic link; refused",
                        folder.display()
                    ),
                ))
            }
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(Failure::temporary(
                    "4.3.0",
                    format!("{} is not a folder; refused", folder.display()),
                ))
            }
            Err(_) => DirBuilder::new()
                .mode(0o700)
                .create(&folder)
                .map_err(|error| Failure::writing(&folder, &error))?,
        }
    }
    Ok(())
}

fn write_durably(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// `<seconds>.M<microseconds>P<pid>.<host>`: the Maildir convention, unique on this host
/// for this process at this microsecond; `/` and `:` in the host name are escaped.
fn unique_name(now: Duration) -> String {
    let host = host_name().replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "localhost".into();
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_lands_in_new_whole_with_the_envelope_in_front() {
        let home = tempfile::tempdir().unwrap();
        let account = Account {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            home: home.path().to_owned(),
        };
        let path = deliver(
            &account,
            "ann@example.com",
            b"Subject: hi\r\n\r\nFrom me.\r\n",
            1000,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(path.starts_with(home.path().join("Maildir/new")));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "Return-Path: <ann@example.com>\nDelivered-To: alice\nSubject: hi\n\nFrom me.\n"
        );
        assert_eq!(
            std::fs::read_dir(home.path().join("Maildir/tmp"))
                .unwrap()
                .count(),
            0
        );
        let failure = deliver(
            &account,
            "ann@example.com",
            &[b'x'; 2000],
            1000,
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert_eq!(failure.code, Failure::DATA);
    }
}
