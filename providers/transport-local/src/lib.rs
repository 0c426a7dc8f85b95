//! The local transport: delivers `LOCAL` recipients into the mailboxes mail programs read,
//! `/var/mail/NAME` in mbox format (the default) or `~NAME/Maildir`.
//!
//! Configured, it claims `LOCAL` ahead of the store's own `Local/NAME` folders. The host
//! stays unprivileged: each delivery runs the helper `spooler-local-deliver` (built beside
//! the host, installed setuid root), which becomes the recipient and writes as that user.
//! This transport only turns the helper's exit code into the recipient's outcome:
//! - delivered;
//! - no such user, a system account, a message larger than the mailbox limit: failed for
//!   good, so the sender gets a non-delivery report naming the reason;
//! - a locked or full mailbox, one refused for its form (a symbolic link), a full disk:
//!   deferred, and tried again later.
//!
//! ```toml
//! [[transport]]
//! provider = "local"
//! config = { format = "mbox", mailbox_size_limit = 51200000 }
//! ```

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use provider_abi::transport::is_enhanced_status_code;
use provider_abi::{
    export_library, Address, Library, MessageRef, OpenContext, ProviderError, RecipientOutcome,
    Transport,
};
use serde::Deserialize;

/// The helper's name, beside the host's binary unless `helper` says where.
const HELPER: &str = "spooler-local-deliver";

/// The configuration table of a local transport.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// `mbox` (`/var/mail/NAME`) or `maildir` (`~NAME/Maildir`).
    #[serde(default)]
    format: Format,
    /// The largest a mailbox may grow to (mbox), or a message may be (Maildir), in bytes;
    /// Postfix's default.
    #[serde(default = "default_limit")]
    mailbox_size_limit: u64,
    /// The helper program; by default the one beside the host's binary.
    helper: Option<PathBuf>,
}

fn default_limit() -> u64 {
    51_200_000
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Mbox,
    Maildir,
}

/// The transport instance.
pub struct LocalTransport {
    helper: PathBuf,
    format: Format,
    limit: u64,
}

impl LocalTransport {
    /// Opens the transport: its configuration, and a helper that is there to run.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        let helper = match config.helper {
            Some(helper) => helper,
            None => beside_the_host().ok_or_else(|| {
                context.config_error("helper", "cannot tell where the host's binary is; set it")
            })?,
        };
        let metadata = std::fs::metadata(&helper).map_err(|error| {
            context.config_error(
                "helper",
                format!(
                    "{}: {error}; build it (`cargo build --release -p transport-local`) and \
                     install it as the README says (\"Local mailboxes\")",
                    helper.display()
                ),
            )
        })?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && metadata.permissions().mode() & 0o4000 == 0 {
            log::warn!(
                "{} is not setuid: only mail for the user the host runs as can be delivered; \
                 mail for anyone else waits (see the README, \"Local mailboxes\")",
                helper.display()
            );
        }
        Ok(LocalTransport {
            helper,
            format: config.format,
            limit: config.mailbox_size_limit,
        })
    }

    /// Delivers `message` to one local `user` through the helper.
    fn deliver(&self, message: &MessageRef<'_>, user: &str) -> RecipientOutcome {
        let format = match self.format {
            Format::Mbox => "--mbox",
            Format::Maildir => "--maildir",
        };
        let spawned = Command::new(&self.helper)
            .arg(format)
            .args(["--sender", message.envelope.sender.address()])
            .args(["--limit", &self.limit.to_string()])
            .arg(user)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                return RecipientOutcome::deferred(
                    format!("cannot run {}: {error}", self.helper.display()),
                    None,
                )
            }
        };
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(message.content.as_slice()));
        let output = match child.wait_with_output() {
            Ok(output) => output,
            Err(error) => {
                return RecipientOutcome::deferred(
                    format!("{} did not finish: {error}", self.helper.display()),
                    None,
                )
            }
        };
        let said = |text: &[u8]| String::from_utf8_lossy(text).trim().to_owned();
        match output.status.code() {
            Some(0) if matches!(written, Some(Ok(()))) => {
                RecipientOutcome::delivered(said(&output.stdout))
            }
            Some(code @ (64 | 65 | 67 | 77)) => {
                let line = said(&output.stderr);
                let (status, text) = split_status(&line, code);
                RecipientOutcome::failed(status, format!("x-local; {line}"), text)
            }
            _ => {
                let line = said(&output.stderr);
                let why = if line.is_empty() {
                    format!("{} ended with {}", self.helper.display(), output.status)
                } else {
                    line
                };
                RecipientOutcome::deferred(why, None)
            }
        }
    }
}

/// The RFC 3463 status that leads a line of the helper, and the rest; a line without one
/// gets a generic status for exit `code`.
fn split_status(line: &str, code: i32) -> (&str, &str) {
    let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
    match (is_enhanced_status_code(first), code) {
        (true, _) => (first, rest),
        (false, 67) => ("5.1.1", line),
        (false, 75) => ("4.3.0", line),
        (false, _) => ("5.3.0", line),
    }
}

/// The helper beside the running binary (the host, or its provider process).
fn beside_the_host() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent().unwrap_or(Path::new("/")).join(HELPER))
}

impl Transport for LocalTransport {
    fn address_types(&self) -> Vec<String> {
        vec!["LOCAL".into()]
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        // User names are looked up in lower case, as Postfix's local does.
        Ok(recipients
            .iter()
            .map(|recipient| self.deliver(&message, &recipient.address().to_lowercase()))
            .collect())
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).transport(
        "local",
        &["LOCAL"],
        LocalTransport::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helpers_status_leads_its_line() {
        assert_eq!(
            split_status("5.1.1 no such user: bob", 67),
            ("5.1.1", "no such user: bob")
        );
        assert_eq!(split_status("killed", 67), ("5.1.1", "killed"));
        assert_eq!(split_status("", 75), ("4.3.0", ""));
    }

    #[test]
    fn a_missing_helper_is_refused_naming_the_key() {
        let error = provider_testkit::open_transport(
            super::library,
            "local",
            "helper = \"/nonexistent/spooler-local-deliver\"",
        )
        .err()
        .expect("refused");
        assert!(
            error.message().contains("key helper")
                && error
                    .message()
                    .contains("/nonexistent/spooler-local-deliver")
                && error.message().contains("Local mailboxes"),
            "{error}"
        );
        let error = provider_testkit::open_transport(super::library, "local", "format = \"mh\"")
            .err()
            .expect("refused");
        assert!(error.message().contains("unknown variant `mh`"), "{error}");
    }
}
