//! The pickup folder: inbound messages as `.eml` files, one message each. Writers should
//! create a file under a name starting with `.` (or not ending in `.eml`) and rename it
//! when complete, as with Maildir, so that no half-written file is picked up.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use provider_abi::abi_stable::std_types::ROption;
use provider_abi::headers::header_fields;
use provider_abi::{Address, InboundMessage, ProviderError};

/// How many messages one pull returns at most, so memory stays bounded.
const BATCH: usize = 100;

/// A pickup folder.
pub struct Pickup {
    folder: PathBuf,
}

impl Pickup {
    /// The pickup folder at `folder`, created if missing.
    pub fn open(folder: PathBuf) -> io::Result<Pickup> {
        fs::create_dir_all(&folder)?;
        Ok(Pickup { folder })
    }

    /// Its path.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The names of the messages waiting, oldest name first.
    pub fn waiting(folder: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = fs::read_dir(folder)?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.ends_with(".eml") && !name.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Up to a batch of waiting messages; each stays in the folder until removed.
    pub fn read_batch(&self) -> Result<Vec<InboundMessage>, ProviderError> {
        let names = Pickup::waiting(&self.folder).map_err(|error| {
            ProviderError::temporary(format!(
                "cannot read the pickup folder {}: {error}",
                self.folder.display()
            ))
        })?;
        let mut messages = Vec::new();
        for name in names.into_iter().take(BATCH) {
            match fs::read(self.folder.join(&name)) {
                Ok(content) => messages.push(inbound(name, content)),
                // Another reader took it, or it is unreadable: leave it and say so.
                Err(error) => log::warn!(
                    "pickup {}: cannot read {name}: {error}",
                    self.folder.display()
                ),
            }
        }
        Ok(messages)
    }

    /// Removes a message the host has stored.
    pub fn remove(&self, name: &str) -> Result<(), ProviderError> {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ProviderError::permanent(format!(
                "`{name}` is not a message of this pickup folder"
            )));
        }
        let path = self.folder.join(name);
        fs::remove_file(&path)
            .and_then(|()| fs::File::open(&self.folder)?.sync_all())
            .map_err(|error| {
                ProviderError::temporary(format!("cannot remove {}: {error}", path.display()))
            })
    }
}

/// A message from a pickup file: its envelope from `Return-Path` and `X-Envelope-To`, if
/// the file has them (as files this transport writes do).
pub(crate) fn inbound(name: String, content: Vec<u8>) -> InboundMessage {
    let fields = header_fields(&content);
    let address = |value: &str| {
        Address::parse(value.trim().trim_start_matches('<').trim_end_matches('>')).ok()
    };
    let sender = fields
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case("Return-Path"))
        .and_then(|(_, value)| address(value));
    let recipients = fields
        .iter()
        .filter(|(field, _)| field.eq_ignore_ascii_case("X-Envelope-To"))
        .filter_map(|(_, value)| address(value))
        .collect();
    InboundMessage {
        source_id: name.into(),
        sender: ROption::from(sender),
        recipients,
        content: content.into(),
    }
}
