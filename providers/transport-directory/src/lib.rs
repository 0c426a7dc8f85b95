//! The directory transport: writes each outbound message, with its envelope, into a folder.
//!
//! Useful for gateways (another program picks the files up) and for tests. Each delivery is
//! one file, `<message id>-<recipients hash>.eml`: the envelope as `Return-Path` and
//! `X-Envelope-To` header lines in front of the original content. Files appear atomically
//! (written aside, then linked in) and never replace one another: a delivery made again
//! (the host crashed after the transport wrote it but before the host recorded it) arrives
//! as `<…>.1.eml`, so a gateway can tell and drop the repeat.
//!
//! With `only = ["+49*"]` it takes only matching addresses and answers "not mine" for the
//! rest, which the host then offers to the next transport claiming the type.
//!
//! The transport is offline while its offline marker file exists (`<folder>/.offline` unless
//! configured): messages for it wait in the queue. A watcher notices when the marker goes
//! away and tells the host, which sends the waiting mail at once.
//!
//! With `pickup = "/folder"` it also brings mail in: every `.eml` file there is an inbound
//! message, handed to the host when the watcher sees it arrive (and every
//! `poll_interval_secs`), and removed only once the host has stored it.

mod pickup;

#[cfg(test)]
mod fuzz;
mod watcher;

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provider_abi::{
    export_library, Address, InboundMessage, Library, MessageRef, OpenContext, ProviderError,
    RecipientOutcome, Transport,
};

use pickup::Pickup;
use serde::Deserialize;
use watcher::Watched;

/// The configuration table of a directory transport.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The folder outbound messages are written to; created if missing.
    path: PathBuf,
    /// The address type it claims.
    #[serde(default = "default_address_type")]
    address_type: String,
    /// While this file exists the transport is offline.
    offline_marker: Option<PathBuf>,
    /// How often the watcher looks at the offline marker, in milliseconds.
    #[serde(default = "default_watch_interval")]
    watch_interval_ms: u64,
    /// Only these addresses (a trailing `*` matches any rest, case-insensitive); for the
    /// others it answers "not mine" and the host offers them to the next transport.
    only: Option<Vec<String>>,
    /// The folder inbound messages are picked up from, if any.
    pickup: Option<PathBuf>,
    /// How often the host fetches the pickup folder without being told, in seconds.
    #[serde(default = "default_poll_interval")]
    poll_interval_secs: u32,
}

fn default_poll_interval() -> u32 {
    60
}

fn default_address_type() -> String {
    "FILE".into()
}

fn default_watch_interval() -> u64 {
    250
}

/// The transport instance.
pub struct DirectoryTransport {
    folder: PathBuf,
    only: Option<Vec<String>>,
    pickup: Option<Pickup>,
    poll_interval_secs: u32,
    address_type: String,
    offline_marker: PathBuf,
    stop_watching: Arc<AtomicBool>,
}

impl DirectoryTransport {
    /// Opens the transport from its configuration table.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        if !provider_abi::address::is_address_type(&config.address_type) {
            return Err(context.config_error(
                "address_type",
                format!(
                    "`{}` is not an address type (letters, digits, '-' or '_')",
                    config.address_type
                ),
            ));
        }
        fs::create_dir_all(&config.path).map_err(|error| {
            context.config_error(
                "path",
                format!("cannot create folder {}: {error}", config.path.display()),
            )
        })?;
        let offline_marker = config
            .offline_marker
            .unwrap_or_else(|| config.path.join(".offline"));
        let pickup = config
            .pickup
            .map(Pickup::open)
            .transpose()
            .map_err(|error| {
                context.config_error("pickup", format!("cannot create the folder: {error}"))
            })?;
        let stop_watching = Arc::new(AtomicBool::new(false));
        watcher::start(
            Watched {
                offline_marker: offline_marker.clone(),
                pickup: pickup.as_ref().map(|p| p.folder().to_owned()),
                interval: Duration::from_millis(config.watch_interval_ms.max(10)),
            },
            context.host().clone(),
            Arc::clone(&stop_watching),
        );
        Ok(DirectoryTransport {
            folder: config.path,
            only: config.only,
            pickup,
            poll_interval_secs: config.poll_interval_secs,
            address_type: config.address_type.to_ascii_uppercase(),
            offline_marker,
            stop_watching,
        })
    }

    fn write_delivery(
        &self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> std::io::Result<PathBuf> {
        let mut hasher = DefaultHasher::new();
        recipients.hash(&mut hasher);
        let stem = format!("{}-{:016x}", message.envelope.id, hasher.finish());
        let aside = self.folder.join(format!(".{stem}.tmp"));
        let mut file = fs::File::create(&aside)?;
        let mut head = format!("Return-Path: <{}>\r\n", message.envelope.sender);
        for recipient in recipients {
            head += &format!("X-Envelope-To: {recipient}\r\n");
        }
        file.write_all(head.as_bytes())?;
        file.write_all(message.content.as_slice())?;
        file.sync_all()?;
        let target = link_without_replacing(&aside, &self.folder, &stem)?;
        fs::remove_file(&aside)?;
        sync_folder(&self.folder)?;
        Ok(target)
    }
}

impl DirectoryTransport {
    fn accepts(&self, recipient: &Address) -> bool {
        let Some(patterns) = &self.only else {
            return true;
        };
        let address = recipient.address().to_lowercase();
        patterns.iter().any(|pattern| {
            let pattern = pattern.to_lowercase();
            match pattern.strip_suffix('*') {
                Some(prefix) => address.starts_with(prefix),
                None => address == pattern,
            }
        })
    }
}

impl Drop for DirectoryTransport {
    fn drop(&mut self) {
        self.stop_watching.store(true, Ordering::Relaxed);
    }
}

impl Transport for DirectoryTransport {
    fn address_types(&self) -> Vec<String> {
        vec![self.address_type.clone()]
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        let (mine, not_mine): (Vec<usize>, Vec<usize>) =
            (0..recipients.len()).partition(|&i| self.accepts(&recipients[i]));
        if mine.is_empty() {
            return Ok(recipients
                .iter()
                .map(|_| RecipientOutcome::NotMine)
                .collect());
        }
        if !not_mine.is_empty() {
            let mut outcomes = vec![RecipientOutcome::NotMine; recipients.len()];
            let accepted: Vec<Address> = mine.iter().map(|&i| recipients[i].clone()).collect();
            for (index, outcome) in mine.into_iter().zip(self.submit(message, &accepted)?) {
                outcomes[index] = outcome;
            }
            return Ok(outcomes);
        }
        if !self.is_online() {
            let reason = format!("offline while {} exists", self.offline_marker.display());
            return Ok(recipients
                .iter()
                .map(|_| RecipientOutcome::deferred(reason.clone(), None))
                .collect());
        }
        let outcome = match self.write_delivery(message, recipients) {
            Ok(path) => {
                log::debug!(
                    "message {} written to {}",
                    message.envelope.id,
                    path.display()
                );
                RecipientOutcome::delivered(format!("written to {}", path.display()))
            }
            Err(error) => RecipientOutcome::deferred(
                format!("cannot write into {}: {error}", self.folder.display()),
                None,
            ),
        };
        Ok(recipients.iter().map(|_| outcome.clone()).collect())
    }

    fn is_online(&mut self) -> bool {
        !self.offline_marker.exists()
    }

    fn pull(&mut self) -> Result<Vec<InboundMessage>, ProviderError> {
        match &self.pickup {
            Some(pickup) => pickup.read_batch(),
            None => Ok(Vec::new()),
        }
    }

    fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
        match &self.pickup {
            Some(pickup) => pickup.remove(source_id),
            None => Err(ProviderError::unsupported(
                "this directory transport has no pickup folder",
            )),
        }
    }

    fn poll_interval_secs(&self) -> Option<u32> {
        self.pickup.as_ref().map(|_| self.poll_interval_secs)
    }
}

/// Links `aside` in as `<stem>.eml`, or `<stem>.<n>.eml` with the first free `n`; or, if one
/// of those already holds exactly what `aside` holds, returns that one. The stem is the queue
/// id and the recipients: the same bytes under it mean this very delivery was made before
/// the host could record it (it was killed in between), and making it again would deliver
/// twice. A different message under the same stem (a store started afresh reuses ids) gets
/// a new name.
fn link_without_replacing(aside: &Path, folder: &Path, stem: &str) -> std::io::Result<PathBuf> {
    for repeat in 0.. {
        let name = match repeat {
            0 => format!("{stem}.eml"),
            n => format!("{stem}.{n}.eml"),
        };
        let target = folder.join(name);
        match fs::hard_link(aside, &target) {
            Ok(()) => return Ok(target),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                if fs::read(&target)? == fs::read(aside)? {
                    return Ok(target);
                }
            }
            Err(error) => return Err(error),
        }
    }
    unreachable!("some repeat number is free")
}

/// Makes the new name durable: on Linux a link is only on disk once its folder is synced.
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    fs::File::open(folder)?.sync_all()
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "directory",
        &["FILE"],
        DirectoryTransport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_hosts_transport_contract() {
        let folder = tempfile::tempdir().unwrap();
        let config = format!("path = \"{}\"", folder.path().display());
        let recipients = ["FILE:alice", "FILE:bob"];
        provider_testkit::check_transport(super::library, "directory", &config, &recipients)
            .unwrap();
    }

    #[test]
    fn keeps_the_hosts_inbound_contract() {
        let folder = tempfile::tempdir().unwrap();
        let pickup = folder.path().join("pickup");
        std::fs::create_dir(&pickup).unwrap();
        for n in 0..2 {
            let content = format!("From: ann@example.com\r\nTo: FILE:bob\r\n\r\nBody {n}.\r\n");
            std::fs::write(pickup.join(format!("m{n}.eml")), content).unwrap();
        }
        let config = format!(
            "path = \"{}\"\npickup = \"{}\"",
            folder.path().join("out").display(),
            pickup.display()
        );
        assert_eq!(
            provider_testkit::check_pull(super::library, "directory", &config),
            Ok(2)
        );
    }

    #[test]
    fn a_wrong_table_is_refused_naming_the_key() {
        let error = provider_testkit::open_transport(
            super::library,
            "directory",
            "path = \"/tmp/x\"\naddress_type = \"F I\"",
        )
        .err()
        .expect("refused");
        assert_eq!(
            error.message(),
            "instance \"directory-test\": key address_type: `F I` is not an address type (letters, digits, '-' or '_')"
        );
        let error =
            provider_testkit::open_transport(super::library, "directory", "pth = \"/tmp/x\"")
                .err()
                .expect("refused");
        assert!(
            error
                .message()
                .starts_with("instance \"directory-test\": key pth at line 1: unknown field `pth`"),
            "{error}"
        );
    }
}
