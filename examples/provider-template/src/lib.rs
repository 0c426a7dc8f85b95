//! `transport-mbox`, the provider template: a transport that appends each message to an mbox
//! file per recipient. Everything a provider needs is here: a configuration table read with
//! clear errors, the `Transport` trait with one outcome per recipient (`NotMine` for what it
//! will not take), log records, and the library export.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use provider_abi::{
    export_library, Address, Library, MessageRef, OpenContext, ProviderError, RecipientOutcome,
    Transport,
};
use serde::Deserialize;

/// The instance's table in the host's profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The folder the mbox files go into; it must exist.
    path: PathBuf,
    /// The only addresses taken (case-insensitive); others are answered `NotMine`. All when
    /// absent.
    accept: Option<Vec<String>>,
}

/// One instance: the host calls it from one thread, so it needs no locking.
pub struct MboxTransport {
    name: String,
    folder: PathBuf,
    accept: Option<Vec<String>>,
}

impl MboxTransport {
    /// Opens an instance from its context, checking its configuration.
    pub fn open(context: &OpenContext) -> Result<MboxTransport, ProviderError> {
        // Errors name the instance, the key, the line and what was expected; with
        // `deny_unknown_fields` a misspelt key is one of them.
        let config: Config = context.config_as()?;
        if !config.path.is_dir() {
            return Err(context.config_error(
                "path",
                format!(
                    "{} is not a folder; create it, writable by the spooler's user",
                    config.path.display()
                ),
            ));
        }
        Ok(MboxTransport {
            name: context.name().to_owned(),
            folder: config.path,
            accept: config
                .accept
                .map(|all| all.iter().map(|a| a.to_lowercase()).collect()),
        })
    }

    fn takes(&self, recipient: &Address) -> bool {
        let address = recipient.address().to_lowercase();
        self.accept
            .as_ref()
            .is_none_or(|all| all.contains(&address))
    }

    /// The mbox file of `recipient`: its address, with path separators replaced.
    fn file_of(&self, recipient: &Address) -> PathBuf {
        let name: String = recipient
            .address()
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c == '\0' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        self.folder.join(format!("{name}.mbox"))
    }
}

/// Appends `message` to `file` in mboxrd form (line ends LF, `From ` lines quoted with `>`)
/// and syncs it before returning: "delivered" means on disk.
fn append(file: &Path, message: MessageRef<'_>, now: SystemTime) -> std::io::Result<()> {
    let mut entry = format!(
        "From {} {}\n",
        message.envelope.sender.address(),
        asctime(now)
    )
    .into_bytes();
    for line in message.content.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let quotes = line.iter().take_while(|&&b| b == b'>').count();
        if line[quotes..].starts_with(b"From ") {
            entry.push(b'>');
        }
        entry.extend_from_slice(line);
        entry.push(b'\n');
    }
    entry.push(b'\n');
    let mut mbox = OpenOptions::new().create(true).append(true).open(file)?;
    mbox.write_all(&entry)?;
    mbox.sync_all()
}

/// `time` as the `From ` line writes it, in UTC: `Wed Nov 25 09:56:51 2026`.
fn asctime(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {day:2} {:02}:{:02}:{:02} {year}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

impl Transport for MboxTransport {
    fn address_types(&self) -> Vec<String> {
        vec!["MBOX".into()]
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        Ok(recipients
            .iter()
            .map(|recipient| {
                if !self.takes(recipient) {
                    return RecipientOutcome::NotMine;
                }
                let file = self.file_of(recipient);
                match append(&file, message, SystemTime::now()) {
                    Ok(()) => {
                        log::info!(
                            "{}: message {} appended to {}",
                            self.name,
                            message.envelope.id,
                            file.display()
                        );
                        RecipientOutcome::delivered(format!("appended to {}", file.display()))
                    }
                    // A full disk or a folder gone: the host keeps the message and retries.
                    Err(error) => RecipientOutcome::deferred(
                        format!("cannot append to {}: {error}", file.display()),
                        None,
                    ),
                }
            })
            .collect())
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "mbox",
        &["MBOX"],
        MboxTransport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::{Envelope, MessageId, Recipient, RecipientKind, StoredMessage};
    use std::time::Duration;

    fn folder(test: &str) -> PathBuf {
        let folder = std::env::temp_dir().join(format!("mbox-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    fn message(content: &str) -> StoredMessage {
        let sender = Address::parse("ann@example.com").unwrap();
        let to = Recipient::new(Address::parse("MBOX:alice").unwrap(), RecipientKind::To);
        let mut envelope = Envelope::new(sender, vec![to]);
        envelope.id = MessageId(7);
        StoredMessage {
            envelope,
            folder: "Outbox".into(),
            content: content.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn a_message_is_appended_in_mboxrd_form_with_from_lines_quoted() {
        let folder = folder("append");
        let mut transport = MboxTransport {
            name: "mbox".into(),
            folder: folder.clone(),
            accept: None,
        };
        let stored = message("Subject: hi\r\n\r\nFrom here on\r\n>From there\r\nend\r\n");
        let alice = Address::parse("MBOX:alice").unwrap();
        let outcomes = transport
            .submit(stored.as_ref(), std::slice::from_ref(&alice))
            .unwrap();
        assert!(matches!(outcomes[..], [RecipientOutcome::Delivered { .. }]));
        transport.submit(stored.as_ref(), &[alice]).unwrap();
        let mbox = std::fs::read_to_string(folder.join("alice.mbox")).unwrap();
        let entry = "Subject: hi\n\n>From here on\n>>From there\nend\n\n";
        assert_eq!(mbox.matches(entry).count(), 2, "{mbox}");
        assert!(mbox.starts_with("From ann@example.com "), "{mbox}");
        std::fs::remove_dir_all(folder).ok();
    }

    #[test]
    fn addresses_outside_accept_are_not_mine() {
        let folder = folder("accept");
        let mut transport = MboxTransport {
            name: "mbox".into(),
            folder: folder.clone(),
            accept: Some(vec!["alice".into()]),
        };
        let recipients = [
            Address::parse("MBOX:Alice").unwrap(),
            Address::parse("MBOX:bob").unwrap(),
        ];
        let outcomes = transport
            .submit(message("x\n").as_ref(), &recipients)
            .unwrap();
        assert!(matches!(outcomes[0], RecipientOutcome::Delivered { .. }));
        assert!(matches!(outcomes[1], RecipientOutcome::NotMine));
        assert!(!folder.join("bob.mbox").exists());
        std::fs::remove_dir_all(folder).ok();
    }

    #[test]
    fn a_folder_that_cannot_be_written_defers_instead_of_failing() {
        let mut transport = MboxTransport {
            name: "mbox".into(),
            folder: PathBuf::from("/nonexistent/mbox"),
            accept: None,
        };
        let alice = [Address::parse("MBOX:alice").unwrap()];
        let outcomes = transport.submit(message("x\n").as_ref(), &alice).unwrap();
        assert!(matches!(outcomes[0], RecipientOutcome::Deferred { .. }));
    }

    #[test]
    fn keeps_the_hosts_transport_contract() {
        let folder = folder("contract");
        let config = format!("path = \"{}\"", folder.display());
        provider_testkit::check_transport(library, "mbox", &config, &["MBOX:alice", "MBOX:bob"])
            .unwrap();
        std::fs::remove_dir_all(folder).ok();
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let refused = |config: &str| {
            provider_testkit::open_transport(library, "mbox", config)
                .err()
                .expect("refused")
                .message()
                .to_owned()
        };
        assert!(refused("path = \"/tmp\"\naccpet = [\"alice\"]")
            .starts_with("instance \"mbox-test\": key accpet at line 2: unknown field `accpet`"));
        assert_eq!(
            refused("path = \"/nonexistent/mbox\""),
            "instance \"mbox-test\": key path: /nonexistent/mbox is not a folder; create it, \
             writable by the spooler's user"
        );
    }

    #[test]
    fn from_lines_carry_the_time_as_asctime_does() {
        let time = UNIX_EPOCH + Duration::from_secs(1_795_600_611);
        assert_eq!(asctime(time), "Wed Nov 25 09:56:51 2026");
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    }
}
