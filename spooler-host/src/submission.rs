//! Turning a client's submission into an envelope and content for the Outbox.

use provider_abi::{Address, Envelope, Recipient, ReportRequest, Timestamp};

use crate::protocol::Submission;

/// Checks a submission and builds its envelope and content. Bcc header fields are removed
/// from the content (as `sendmail -t` does): Bcc recipients live in the envelope only.
pub fn envelope_and_content(
    submission: &Submission,
    content: Vec<u8>,
) -> Result<(Envelope, Vec<u8>), String> {
    let sender = Address::parse(&submission.sender).map_err(|e| format!("sender: {e}"))?;
    if submission.recipients.is_empty() {
        return Err("the message has no recipients".into());
    }
    let mut recipients: Vec<Recipient> = Vec::with_capacity(submission.recipients.len());
    for recipient in &submission.recipients {
        let address = Address::parse(&recipient.address).map_err(|e| format!("recipient: {e}"))?;
        if !recipients.iter().any(|r| r.address == address) {
            recipients.push(Recipient::new(address, recipient.kind.into()));
        }
    }
    if content.is_empty() {
        return Err("the message is empty".into());
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
    Ok((envelope, without_bcc_header(content)))
}

/// The content without `Bcc` header fields (folded continuation lines included).
pub fn without_bcc_header(content: Vec<u8>) -> Vec<u8> {
    let header_end = find_header_end(&content);
    let (head, body) = content.split_at(header_end);
    if !head.split(|&b| b == b'\n').any(is_bcc_line) {
        return content;
    }
    let mut out = Vec::with_capacity(content.len());
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !continuation {
            skipping = is_bcc_line(line);
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

/// Whether `line` starts a Bcc field as `header_fields` (which `-t` takes recipients with)
/// reads its name: the text before the colon, trimmed, so that no field `-t` reads as Bcc
/// stays in the content (`\rBcc:` among them).
fn is_bcc_line(line: &[u8]) -> bool {
    line.iter().position(|&b| b == b':').is_some_and(|colon| {
        String::from_utf8_lossy(&line[..colon])
            .trim()
            .eq_ignore_ascii_case("bcc")
    })
}

/// Where the header block ends (the index of the empty line's first byte, or the end).
fn find_header_end(content: &[u8]) -> usize {
    let mut start = 0;
    for line in content.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            return start;
        }
        start += line.len();
    }
    content.len()
}

#[cfg(test)]
mod tests {
    use super::*;

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
