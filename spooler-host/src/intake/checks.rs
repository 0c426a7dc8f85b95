//! Turning a client's submission into an envelope and content for the Outbox: the checks
//! that refuse it at once, and the key that makes a retried submission happen once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use provider_abi::headers::{field_spans, header};
use provider_abi::store::SubmissionKey;
use provider_abi::{Address, Envelope, Property, Recipient, ReportRequest, Timestamp};
use sha2::{Digest, Sha256};

use crate::base::properties::{ORIGINAL_RECIPIENT, RETURN};
use crate::intake::aliases::Aliases;
use crate::intake::mailbox;
use crate::intake::{Refusal, RefusalKind};
use crate::protocol::{Submission, Verdict};
use crate::providers::routing_table::RoutingTable;

/// What every submission is held to, from the profile.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The largest message, in bytes (`limits.max_message_size`).
    pub max_message_size: usize,
    /// How long a submission's key is remembered (`submission.duplicate_window`).
    pub duplicate_window: Duration,
    /// What local names become (bare names, aliases).
    pub aliases: Arc<Aliases>,
}

impl Refusal {
    fn address(message: String) -> Refusal {
        Refusal::new(RefusalKind::BadAddress, message)
    }
}

/// Reads `input` as an address and checks its syntax for its type.
fn checked_address(input: &str, role: &str) -> Result<Address, Refusal> {
    let address = Address::parse(input).map_err(|e| Refusal::address(format!("{role}: {e}")))?;
    match mailbox::syntax_error(&address) {
        Some(why) => Err(Refusal::address(format!("{role}: {why}"))),
        None => Ok(address),
    }
}

/// Checks a submission and builds its envelope and content. Bcc header fields are removed
/// from the content (as `sendmail -t` does): Bcc recipients live in the envelope only.
///
/// With a duplicate window, the envelope carries the submission's [`SubmissionKey`]: the
/// same message (Message-ID, sender and recipients) submitted again within the window gets
/// the first one's id from the store. A message without a Message-ID has no key.
pub fn envelope_and_content(
    submission: &Submission,
    content: Vec<u8>,
    rules: &Rules,
    now: Timestamp,
) -> Result<(Envelope, Vec<u8>), Refusal> {
    let sender = checked_address(
        &rules.aliases.qualified_sender(&submission.sender),
        "sender",
    )?;
    if submission.recipients.is_empty() {
        return Err(Refusal::address("the message has no recipients".into()));
    }
    let mut recipients: Vec<Recipient> = Vec::with_capacity(submission.recipients.len());
    let mut originals = Vec::new();
    let mut seen = HashSet::with_capacity(submission.recipients.len());
    for recipient in &submission.recipients {
        let expanded = rules.aliases.expand(&recipient.address).map_err(|e| {
            Refusal::new(
                RefusalKind::Temporary,
                format!("recipient {}: {e}", recipient.address),
            )
        })?;
        for expanded in expanded {
            let address = checked_address(&expanded.address, "recipient")?;
            // A set, not a scan of the list: a message may have tens of thousands.
            if !seen.insert(address.clone()) {
                continue;
            }
            if let Some(original) = expanded.original {
                originals.push(Property {
                    name: format!("{ORIGINAL_RECIPIENT}{address}").into(),
                    value: format!("rfc822; {original}").into(),
                });
            }
            recipients.push(Recipient::new(address, recipient.kind.into()));
        }
    }
    if content.is_empty() {
        return Err(Refusal::new(
            RefusalKind::BadMessage,
            "the message is empty",
        ));
    }
    let mut envelope = Envelope::new(sender, recipients);
    envelope.reports = ReportRequest {
        delivery: submission.delivery_report,
        non_delivery: !submission.no_non_delivery_report,
    };
    envelope.priority = submission.priority.into();
    envelope.deferred_until = submission.deferred_until.map(Timestamp).into();
    envelope.expires_at = submission.expires_at.map(Timestamp).into();
    envelope.delete_after_submission = submission.delete_after_submission;
    if submission.return_full {
        envelope.properties.push(Property {
            name: RETURN.into(),
            value: "FULL".into(),
        });
    }
    envelope.properties.extend(originals);
    if !rules.duplicate_window.is_zero() {
        if let Some(key) = submission_key(&envelope, &content, now.plus(rules.duplicate_window)) {
            envelope.properties.push(key.property());
        }
    }
    Ok((envelope, without_bcc_header(content)))
}

/// What `sendmail -bv` says of `given`: each address it becomes (an alias may make
/// several), and whether something delivers it: the store for its own address types, else
/// the transports claiming the type, in routing order.
pub fn verify(given: &str, rules: &Rules, routes: &RoutingTable) -> Vec<Verdict> {
    let verdict = |deliverable, detail| Verdict {
        given: given.to_owned(),
        deliverable,
        detail,
    };
    let expanded = match rules.aliases.expand(given) {
        Ok(expanded) => expanded,
        Err(error) => return vec![verdict(false, error)],
    };
    expanded
        .into_iter()
        .map(|expanded| {
            let address = match checked_address(&expanded.address, "address") {
                Ok(address) => address,
                Err(refusal) => return verdict(false, refusal.message),
            };
            let kind = address.address_type();
            let transports: Vec<&str> = routes
                .claimants(kind)
                .into_iter()
                .map(|index| routes.transport(index).name.as_str())
                .collect();
            if transports.is_empty()
                && routes
                    .store_types
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(kind))
            {
                verdict(true, format!("{address}, into the store"))
            } else if transports.is_empty() {
                verdict(
                    false,
                    format!("{address}: no transport claims address type {kind}"),
                )
            } else {
                verdict(
                    true,
                    format!("{address}, via {}", transports.join(", then ")),
                )
            }
        })
        .collect()
}

/// The key of a submission: a SHA-256 digest of its Message-ID, its sender and its
/// recipients (in any order, each once).
fn submission_key(
    envelope: &Envelope,
    content: &[u8],
    remember_until: Timestamp,
) -> Option<SubmissionKey> {
    let message_id = header(content, "Message-ID")?;
    let mut recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    recipients.sort_unstable();
    let mut digest = Sha256::new();
    for part in [message_id.trim(), &envelope.sender.to_string()]
        .into_iter()
        .chain(recipients.iter().map(String::as_str))
    {
        digest.update(part.as_bytes());
        digest.update([0]);
    }
    let key = digest
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Some(SubmissionKey {
        key,
        remember_until,
    })
}

/// The content without `Bcc` header fields (folded continuation lines included), found as
/// `-t` finds the Bcc recipients: by the same parser, so no field `-t` reads as Bcc stays.
pub fn without_bcc_header(content: Vec<u8>) -> Vec<u8> {
    let spans = field_spans(&content, "Bcc");
    if spans.is_empty() {
        return content;
    }
    let mut out = Vec::with_capacity(content.len());
    let mut kept_from = 0;
    for span in spans {
        out.extend_from_slice(&content[kept_from..span.start]);
        kept_from = span.end;
    }
    out.extend_from_slice(&content[kept_from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LocalNames;

    fn submission(sender: &str, recipients: &[&str]) -> Submission {
        Submission::new(sender, recipients.iter().map(|r| r.to_string()), 0)
    }

    fn rules() -> Rules {
        Rules {
            max_message_size: 1000,
            duplicate_window: Duration::from_secs(3600),
            aliases: Arc::new(Aliases::new(LocalNames::default())),
        }
    }

    fn key(submission: &Submission, content: &[u8]) -> Option<SubmissionKey> {
        let (envelope, _) =
            envelope_and_content(submission, content.to_vec(), &rules(), Timestamp(0)).unwrap();
        SubmissionKey::of(&envelope)
    }

    #[test]
    fn the_same_message_has_the_same_key_and_any_difference_another() {
        let message = b"Message-ID: <1@x>\r\n\r\nhi\r\n";
        let first = key(&submission("a@x.org", &["b@x.org", "c@x.org"]), message).unwrap();
        assert_eq!(first.remember_until, Timestamp(3_600_000));
        let reordered = key(&submission("a@x.org", &["c@x.org", "b@x.org"]), message);
        assert_eq!(reordered.as_ref(), Some(&first));
        for other in [
            key(&submission("a@x.org", &["b@x.org"]), message),
            key(&submission("z@x.org", &["b@x.org", "c@x.org"]), message),
            key(
                &submission("a@x.org", &["b@x.org", "c@x.org"]),
                b"Message-ID: <2@x>\r\n\r\nhi\r\n",
            ),
        ] {
            assert_ne!(other.unwrap().key, first.key);
        }
        assert_eq!(
            key(
                &submission("a@x.org", &["b@x.org"]),
                b"Subject: none\r\n\r\n"
            ),
            None
        );
    }

    #[test]
    fn a_bad_recipient_is_refused_as_an_address_error_naming_it() {
        let refusal = envelope_and_content(
            &submission("a@x.org", &["SMTP:x@example.net> NOTIFY=NEVER"]),
            b"hi".to_vec(),
            &rules(),
            Timestamp(0),
        )
        .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::BadAddress);
        assert!(
            refusal.message.contains("x@example.net> NOTIFY=NEVER"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn bcc_header_fields_are_removed_and_the_rest_kept() {
        let content = b"From: a@x\r\nBcc: secret@x,\r\n  other@x\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n".to_vec();
        let cleaned = String::from_utf8(without_bcc_header(content)).unwrap();
        assert_eq!(
            cleaned,
            "From: a@x\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n"
        );
    }
}

#[cfg(test)]
mod local_name_tests {
    use super::*;
    use crate::config::LocalNames;

    #[test]
    fn bare_names_become_local_recipients_and_aliases_keep_the_original() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("aliases");
        std::fs::write(&file, "root: admin@example.org, root\n").unwrap();
        let rules = Rules {
            max_message_size: 1000,
            duplicate_window: Duration::ZERO,
            aliases: Arc::new(Aliases::new(LocalNames {
                aliases: Some(file),
                ..LocalNames::default()
            })),
        };
        let submission = Submission::new("cron", ["root".to_string(), "www-data".to_string()], 2);
        let (envelope, _) =
            envelope_and_content(&submission, b"hi".to_vec(), &rules, Timestamp(0)).unwrap();
        assert_eq!(envelope.sender.to_string(), "LOCAL:cron");
        let recipients: Vec<String> = envelope
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(
            recipients,
            ["LOCAL:root", "SMTP:admin@example.org", "LOCAL:www-data"]
        );
        let originals: Vec<(String, String)> = envelope
            .properties
            .iter()
            .map(|p| (p.name.to_string(), p.value.to_string()))
            .collect();
        assert_eq!(
            originals,
            [
                (
                    "spooler.original-recipient.LOCAL:root".to_string(),
                    "rfc822; root".to_string()
                ),
                (
                    "spooler.original-recipient.SMTP:admin@example.org".to_string(),
                    "rfc822; root".to_string()
                )
            ]
        );
    }
}
