//! The recipient's account: its name checked, looked up in the system's user database, the
//! policy on whom the helper writes for, and the one use of root's rights, becoming it.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::Failure;

/// Below this uid, accounts are the system's (Debian's `UID_MIN`), unless
/// `/etc/login.defs` says otherwise.
const DEFAULT_UID_MIN: libc::uid_t = 1000;

/// The uid of `nobody`: an account that owns nothing, so no mailbox either.
const NOBODY: libc::uid_t = 65534;

/// A user name as `useradd` accepts them: letters, digits, `_`, `-`, `.` (not first), and a
/// trailing `$` (Samba machine accounts); at most 32 characters. Anything else, a path
/// above all, is refused before the user database is asked.
pub fn check_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('$').unwrap_or(name);
    let good = !body.is_empty()
        && name.len() <= 32
        && !body.starts_with(['-', '.'])
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if good {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a user name (letters, digits, '_', '-', '.', at most 32)"
        ))
    }
}

/// A user the system knows.
#[derive(Debug)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: PathBuf,
}

impl Account {
    /// The account called `name`, or exit 67 if there is none.
    pub fn look_up(name: &str) -> Result<Account, Failure> {
        let c_name = CString::new(name)
            .map_err(|_| Failure::new(Failure::USAGE, "5.3.5 a user name has no NUL byte"))?;
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buffer = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to a live buffer of the length given; `found` is set to
        // `&entry` or null.
        let error = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut found,
            )
        };
        if error != 0 {
            return Err(Failure::temporary(
                "4.3.0",
                format!(
                    "cannot look up user {name}: {}",
                    std::io::Error::from_raw_os_error(error)
                ),
            ));
        }
        if found.is_null() {
            return Err(Failure::new(
                Failure::NO_USER,
                format!("5.1.1 no such user: {name}"),
            ));
        }
        // SAFETY: getpwnam_r filled `entry`, whose strings point into `buffer`.
        let home = unsafe { CStr::from_ptr(entry.pw_dir) };
        Ok(Account {
            name: name.to_owned(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            home: PathBuf::from(OsStr::from_bytes(home.to_bytes())),
        })
    }

    /// Refuses (exit 77) the accounts the helper does not write for: system accounts and
    /// `nobody`. `root` is allowed.
    pub fn check_allowed(&self) -> Result<(), Failure> {
        let uid_min = uid_min(&std::fs::read_to_string("/etc/login.defs").unwrap_or_default());
        if self.uid == 0 || (self.uid >= uid_min && self.uid != NOBODY) {
            return Ok(());
        }
        Err(Failure::new(
            Failure::NOT_ALLOWED,
            format!(
                "5.7.1 {} (uid {}) is a system account: local mail is delivered to root and \
                 to users with a uid of {uid_min} or more; alias it to a person in /etc/aliases",
                self.name, self.uid
            ),
        ))
    }

    /// Becomes the user, in group `mail` and no other: what may create and lock a file in
    /// `/var/mail`, and nothing more.
    pub fn become_for_mbox(&self) -> Result<(), Failure> {
        let mail = group_id("mail")?;
        self.become_with(mail, &[])
    }

    /// Becomes the user, with its own groups: a Maildir is in its home folder.
    pub fn become_for_maildir(&self) -> Result<(), Failure> {
        let groups = self.groups()?;
        self.become_with(self.gid, &groups)
    }

    /// Sets every group and user id of this process to the account's, for good. A helper
    /// that is not root can only stay who it is (it delivers for its own user).
    fn become_with(&self, gid: libc::gid_t, groups: &[libc::gid_t]) -> Result<(), Failure> {
        let not_privileged = |why: std::io::Error| {
            Failure::temporary(
                "4.3.0",
                format!(
                    "cannot write as user {}: {why}; the helper must be setuid root (see the \
                     README, \"Local mailboxes\") unless it delivers for the user it runs as",
                    self.name
                ),
            )
        };
        // SAFETY: plain system calls on this process's credentials.
        unsafe {
            if libc::geteuid() == 0 && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                return Err(not_privileged(std::io::Error::last_os_error()));
            }
            if libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(self.uid, self.uid, self.uid) != 0
            {
                return Err(not_privileged(std::io::Error::last_os_error()));
            }
            // Dropped for good: a non-root user cannot take root back.
            if self.uid != 0 && libc::setuid(0) == 0 {
                return Err(Failure::temporary(
                    "4.3.0",
                    "could take root back; refusing",
                ));
            }
        }
        Ok(())
    }

    /// The groups the account is a member of, as login gives them.
    fn groups(&self) -> Result<Vec<libc::gid_t>, Failure> {
        let name = CString::new(self.name.as_str()).expect("checked: no NUL");
        let mut groups = vec![0 as libc::gid_t; 256];
        let mut count = groups.len() as libc::c_int;
        // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many.
        let found =
            unsafe { libc::getgrouplist(name.as_ptr(), self.gid, groups.as_mut_ptr(), &mut count) };
        if found < 0 {
            return Err(Failure::temporary(
                "4.3.0",
                format!("user {} is in more than {} groups", self.name, groups.len()),
            ));
        }
        groups.truncate(count as usize);
        Ok(groups)
    }
}

/// `UID_MIN` from the text of `/etc/login.defs`, or Debian's 1000.
fn uid_min(login_defs: &str) -> libc::uid_t {
    login_defs
        .lines()
        .filter_map(|line| line.trim().strip_prefix("UID_MIN"))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(DEFAULT_UID_MIN)
}

/// The id of group `name`.
fn group_id(name: &str) -> Result<libc::gid_t, Failure> {
    let c_name = CString::new(name).expect("a constant without NUL");
    // SAFETY: getgrnam returns null or a pointer to a static entry, read at once.
    let group = unsafe { libc::getgrnam(c_name.as_ptr()) };
    if group.is_null() {
        return Err(Failure::temporary(
            "4.3.0",
            format!("there is no group `{name}`, which owns /var/mail on Debian"),
        ));
    }
    // SAFETY: not null, see above.
    Ok(unsafe { (*group).gr_gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_plain_names() {
        for good in ["root", "alice", "a.b", "svc-x", "_apt", "host$", "Ann"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../root",
            "a/b",
            ".",
            "..",
            "-f",
            "a b",
            "$",
            "ü",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(check_name(&"x".repeat(33)).is_err());
    }

    #[test]
    fn uid_min_comes_from_login_defs() {
        assert_eq!(
            uid_min(
                "# UID_MIN 5
UID_MIN\t\t\t 2000
UID_MAX 60000
"
            ),
            2000
        );
        assert_eq!(
            uid_min(
                "UID_MAX 60000
"
            ),
            DEFAULT_UID_MIN
        );
    }

    #[test]
    fn root_and_people_are_written_for_but_not_system_accounts() {
        let account = |uid| Account {
            name: "x".into(),
            uid,
            gid: uid,
            home: PathBuf::from("/"),
        };
        assert!(account(0).check_allowed().is_ok());
        assert!(account(1000).check_allowed().is_ok());
        for uid in [1, 33, 999, NOBODY] {
            let failure = account(uid).check_allowed().unwrap_err();
            assert_eq!(failure.code, Failure::NOT_ALLOWED);
            assert!(failure.line.contains("/etc/aliases"), "{}", failure.line);
        }
    }
}
