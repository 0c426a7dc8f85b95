//! SMTP AUTH (RFC 4954) for the listener: the users file (`name:$6$...` lines, SHA-512-crypt
//! as `openssl passwd -6` or `mkpasswd -m sha-512` make them, so no password is stored in
//! clear) and the PLAIN (RFC 4616) and LOGIN exchanges' encodings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64ct::{Base64, Encoding};
use parking_lot::Mutex;

/// The users file's accounts. The file is read again when it changes (looked at on each
/// AUTH: one `stat`), so that an operator's edit takes effect without a restart; a file that
/// has become unreadable or malformed leaves the accounts read last in force, and the log
/// says why.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    read: Mutex<Accounts>,
}

/// The accounts as last read, and the file's modification time then.
#[derive(Debug)]
struct Accounts {
    modified: Option<SystemTime>,
    hashes: HashMap<String, String>,
}

impl Users {
    /// Reads the users file: one `name:hash` per line, `#` comments and blank lines
    /// skipped. Only SHA-512-crypt hashes (`$6$`) are taken.
    pub fn load(path: &Path) -> Result<Users, String> {
        let modified = modified(path);
        let hashes = read(path)?;
        Ok(Users {
            path: path.to_owned(),
            read: Mutex::new(Accounts { modified, hashes }),
        })
    }

    /// The hash of `name`'s password, from the file as it is now.
    fn hash_of(&self, name: &str) -> Option<String> {
        let mut accounts = self.read.lock();
        let modified = modified(&self.path);
        if modified != accounts.modified {
            accounts.modified = modified;
            match read(&self.path) {
                Ok(hashes) => {
                    log::info!(
                        "users file {}: read again, {} user(s)",
                        self.path.display(),
                        hashes.len()
                    );
                    accounts.hashes = hashes;
                }
                Err(why) => log::error!(
                    "{why}; the {} user(s) read before stay in force until it is fixed",
                    accounts.hashes.len()
                ),
            }
        }
        accounts.hashes.get(name).cloned()
    }
}

/// When the file at `path` last changed, if it can be told.
fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The accounts of the users file at `path`.
fn read(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
    parse(&text).map_err(|why| format!("users file {}: {why}", path.display()))
}

fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut hashes = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!(
                "line {}: expected `name:$6$...` (make the hash with `openssl passwd -6`)",
                number + 1
            ));
        };
        if !hash.starts_with("$6$") {
            return Err(format!(
                "line {}: the hash of `{name}` is not SHA-512-crypt (`$6$...`); make one \
                     with `openssl passwd -6` or `mkpasswd -m sha-512`",
                number + 1
            ));
        }
        hashes.insert(name.to_owned(), hash.to_owned());
    }
    Ok(hashes)
}

impl Users {
    /// Whether `name` exists and `password` is theirs.
    pub fn check(&self, name: &str, password: &str) -> bool {
        self.hash_of(name)
            .is_some_and(|hash| sha_crypt::sha512_check(password, &hash).is_ok())
    }
}

/// Base64 as SASL writes it; `None` if it is not.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    Base64::decode_vec(text.trim()).ok()
}

/// Base64 for a server challenge.
pub fn encode(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

/// The user name and password of a PLAIN response (`authzid NUL authcid NUL password`); an
/// authorization identity other than the user's own is refused.
pub fn plain(response: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(response).ok()?;
    let mut parts = text.split('\0');
    let (authorize, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || (!authorize.is_empty() && authorize != user) {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt secret`.
    const SECRET: &str =
        "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    /// `openssl passwd -6 -salt saltsalt changed`.
    const CHANGED: &str =
        "$6$saltsalt$xDrMCoCSsBWt0sUUEhib9k4XyuzorE/Cy.p8vW2kPuFL11C2vssxWtqahFC17fGDdU7D93VtnRfRvymd7unSL/";

    /// Writes `text` as the users file at `path`, with a modification time `age` seconds in
    /// the past (so that each write is seen as a change, whatever the clock's resolution).
    fn write(path: &Path, text: &str, age: u64) {
        std::fs::write(path, text).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        let when = SystemTime::now() - std::time::Duration::from_secs(age);
        file.set_modified(when).unwrap();
    }

    #[test]
    fn passwords_are_checked_against_sha512_crypt_hashes() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("users");
        write(&path, &format!("# users\n\napp:{SECRET}\n"), 0);
        let users = Users::load(&path).unwrap();
        assert!(users.check("app", "secret"));
        assert!(!users.check("app", "wrong"));
        assert!(!users.check("nobody", "secret"));
    }

    #[test]
    fn an_edited_file_is_read_again_and_a_broken_one_keeps_the_accounts_in_force() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("users");
        write(&path, &format!("app:{SECRET}\n"), 30);
        let users = Users::load(&path).unwrap();
        assert!(users.check("app", "secret"));
        write(&path, &format!("ops:{CHANGED}\n"), 20);
        assert!(users.check("ops", "changed"), "the new account");
        assert!(!users.check("app", "secret"), "the removed account");
        write(&path, "ops:changed\n", 10);
        assert!(users.check("ops", "changed"), "still in force");
    }

    #[test]
    fn clear_or_weak_hashes_are_refused_with_the_line() {
        let error = parse("app:secret\n").unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("openssl passwd -6"),
            "{error}"
        );
        assert!(parse("no colon\n").is_err());
    }

    #[test]
    fn plain_responses_are_read() {
        assert_eq!(
            plain(b"\0app\0secret"),
            Some(("app".into(), "secret".into()))
        );
        assert_eq!(plain(b"app\0app\0secret").unwrap().0, "app");
        assert_eq!(plain(b"admin\0app\0secret"), None);
        assert_eq!(decode(&encode(b"\0app\0secret")).unwrap(), b"\0app\0secret");
        assert_eq!(decode("not base64!"), None);
    }
}
