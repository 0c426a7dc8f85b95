//! Why mail did not go, in the classes operators and senders recognise: a bad mailbox, a
//! full one, a message too large, a policy or spam block, a DNS, TLS or connection failure,
//! or another cause. A failure's or deferral's class comes from its RFC 3463 enhanced
//! status code when that says enough (`5.1.1`, `4.2.2`, `5.7.1`), otherwise from the words
//! of the answer (`Connection refused`, `NXDOMAIN`, `certificate`). Reports, `show` and the
//! dashboard name it, so nobody has to read SMTP replies to know what to do.

use provider_abi::transport::is_enhanced_status_code;
use provider_abi::{DeliveryState, RecipientStatus};

/// The class of a failure or deferral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BounceClass {
    BadMailbox,
    MailboxFull,
    MessageTooLarge,
    PolicyBlock,
    DnsFailure,
    TlsFailure,
    ConnectionFailure,
    Other,
}

impl BounceClass {
    /// The class of a recipient's last answer; none for one delivered, not yet tried, or
    /// only kept back by the host (`waiting: …`, its transport offline or its destination's
    /// line full), which no server refused.
    pub fn of(status: &RecipientStatus) -> Option<BounceClass> {
        let answered = !status.last_answer.is_empty() || !status.diagnostic.is_empty();
        let kept_back = status.last_answer.starts_with("waiting: ") && status.diagnostic.is_empty();
        if status.state == DeliveryState::Delivered || !answered || kept_back {
            return None;
        }
        // The stored code first, then the words with any code in them (a deferral's code is
        // only there); a generic code (`4.0.0`) leaves the choice to the words.
        let stored = Some(status.status_code.as_str())
            .filter(|code| is_enhanced_status_code(code))
            .and_then(by_code);
        Some(stored.unwrap_or_else(|| {
            BounceClass::of_text(&format!("{} {}", status.last_answer, status.diagnostic))
        }))
    }

    /// The class of an answer given only as words (a deferral's reason), with any enhanced
    /// status code in them.
    pub fn of_text(text: &str) -> BounceClass {
        let code = text
            .split_whitespace()
            .find(|word| is_enhanced_status_code(word) && by_code(word).is_some());
        BounceClass::classify(code, text)
    }

    /// The class of an answer with enhanced status code `code` (if any) and words `text`.
    pub fn classify(code: Option<&str>, text: &str) -> BounceClass {
        if let Some(class) = code.and_then(by_code) {
            return class;
        }
        let text = text.to_lowercase();
        let said = |words: &[&str]| words.iter().any(|w| text.contains(w));
        // "DNS" as a word: a certificate's `DnsName("…")` is not a DNS failure.
        let dns = text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "dns");
        // The order matters: "does not exist (NXDOMAIN)" is DNS, not a mailbox, and a TLS
        // failure is worded as a failure to talk to the server.
        if dns
            || said(&[
                "nxdomain",
                "null mx",
                "mx record",
                "no address",
                "cannot look up",
            ])
        {
            BounceClass::DnsFailure
        } else if said(&["certificate", "tls", "handshake", "mta-sts"]) {
            BounceClass::TlsFailure
        } else if said(&[
            "quota",
            "mailbox full",
            "mailbox is full",
            "insufficient storage",
        ]) {
            BounceClass::MailboxFull
        } else if said(&["too large", "too big", "size limit", "message size"]) {
            BounceClass::MessageTooLarge
        } else if said(&[
            "user unknown",
            "unknown user",
            "no such user",
            "mailbox unavailable",
            "does not exist",
            "recipient address rejected",
            "not an smtp address",
            "invalid recipient",
        ]) {
            BounceClass::BadMailbox
        } else if said(&[
            "spam",
            "blocked",
            "blacklist",
            "blocklist",
            "policy",
            "reputation",
        ]) {
            BounceClass::PolicyBlock
        } else if said(&[
            "connection refused",
            "timed out",
            "cannot talk to",
            "could not be reached",
            "connection error",
            "connection reset",
            "no route",
            "cannot connect",
        ]) {
            BounceClass::ConnectionFailure
        } else {
            BounceClass::Other
        }
    }

    /// Its name in `show --json` and the API: `bad-mailbox`, `mailbox-full`, ….
    pub fn name(self) -> &'static str {
        match self {
            BounceClass::BadMailbox => "bad-mailbox",
            BounceClass::MailboxFull => "mailbox-full",
            BounceClass::MessageTooLarge => "message-too-large",
            BounceClass::PolicyBlock => "policy-block",
            BounceClass::DnsFailure => "dns-failure",
            BounceClass::TlsFailure => "tls-failure",
            BounceClass::ConnectionFailure => "connection-failure",
            BounceClass::Other => "other",
        }
    }

    /// What it means, for a person reading a report.
    pub fn meaning(self) -> &'static str {
        match self {
            BounceClass::BadMailbox => "the mailbox does not exist",
            BounceClass::MailboxFull => "the mailbox is full",
            BounceClass::MessageTooLarge => "the message is too large for the receiver",
            BounceClass::PolicyBlock => "the receiver's policy or spam filter refused it",
            BounceClass::DnsFailure => "the domain cannot be found or takes no mail (DNS)",
            BounceClass::TlsFailure => "no secure (TLS) connection could be made",
            BounceClass::ConnectionFailure => "the receiving server could not be reached",
            BounceClass::Other => "another cause (see the answer)",
        }
    }
}

/// The class an enhanced status code alone decides; none for a generic one (`x.0.0`).
fn by_code(code: &str) -> Option<BounceClass> {
    let mut parts = code.splitn(3, '.').skip(1);
    let subject = parts.next()?;
    let detail = parts.next()?;
    Some(match (subject, detail) {
        ("1", "1" | "3" | "6") | ("2", "1") => BounceClass::BadMailbox,
        ("1", "2" | "10") | ("4", "4") => BounceClass::DnsFailure,
        ("2", "2") => BounceClass::MailboxFull,
        ("2", "3") | ("3", "4") => BounceClass::MessageTooLarge,
        ("4", "1" | "2") => BounceClass::ConnectionFailure,
        ("7", "10") => BounceClass::TlsFailure,
        ("7", _) => BounceClass::PolicyBlock,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::RecipientStatus;

    fn deferred(answer: &str) -> RecipientStatus {
        let mut status = RecipientStatus::pending();
        status.attempts = 1;
        status.last_answer = answer.into();
        status
    }

    #[test]
    fn the_enhanced_code_decides_first() {
        for (code, class) in [
            ("5.1.1", BounceClass::BadMailbox),
            ("5.1.10", BounceClass::DnsFailure),
            ("4.2.2", BounceClass::MailboxFull),
            ("5.3.4", BounceClass::MessageTooLarge),
            ("5.7.1", BounceClass::PolicyBlock),
            ("5.7.10", BounceClass::TlsFailure),
            ("4.4.1", BounceClass::ConnectionFailure),
        ] {
            assert_eq!(
                BounceClass::classify(Some(code), "whatever"),
                class,
                "{code}"
            );
        }
        assert_eq!(
            BounceClass::classify(Some("5.0.0"), "550 mailbox unavailable"),
            BounceClass::BadMailbox,
            "a generic code leaves it to the words"
        );
    }

    #[test]
    fn the_transports_own_words_are_classed() {
        let class = |answer: &str| BounceClass::of(&deferred(answer));
        assert_eq!(
            class("deferred by internet: the domain nowhere.test does not exist (NXDOMAIN)"),
            Some(BounceClass::DnsFailure)
        );
        assert_eq!(
            class("deferred by relay: cannot talk to 127.0.0.1:25: Connection error: Connection refused (os error 111)"),
            Some(BounceClass::ConnectionFailure)
        );
        assert_eq!(
            class("deferred by relay: the certificate of mail.example.com is not trusted"),
            Some(BounceClass::TlsFailure)
        );
        assert_eq!(
            class("invalid peer certificate: certificate not valid for name \"mx.a.test\"; certificate is only valid for DnsName(\"mx.b.test\")"),
            Some(BounceClass::TlsFailure)
        );
        assert_eq!(
            class("deferred by relay: the server answered 452 4.2.2 Mailbox full at RCPT TO"),
            Some(BounceClass::MailboxFull)
        );
        assert_eq!(
            class("deferred by internet: no mail exchanger of down.test could be reached: cannot talk to mx1.down.test[127.0.0.5]:25: Connection error: Connection refused (os error 111)"),
            Some(BounceClass::ConnectionFailure)
        );
        assert_eq!(
            class("deferred by internet: the mail exchangers of a.test have no address (mx.a.test: it does not exist (NXDOMAIN))"),
            Some(BounceClass::DnsFailure)
        );
        assert_eq!(class("try again later"), Some(BounceClass::Other));
    }

    #[test]
    fn a_delivered_or_untried_recipient_has_no_class() {
        assert_eq!(BounceClass::of(&RecipientStatus::pending()), None);
        let mut delivered = deferred("250 2.0.0 Ok");
        delivered.state = DeliveryState::Delivered;
        assert_eq!(BounceClass::of(&delivered), None);
    }
}
