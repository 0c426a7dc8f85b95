//! A session's mail transaction: MAIL with its SIZE and DSN parameters, RCPT (local names,
//! domains mapped to other address types, checked addresses), DATA, and the submission
//! (with the trace field it adds) whose commit comes before the 250.

use provider_abi::{Address, MessageId, Property, Timestamp};

use super::{Session, SessionMode, Transaction};
use crate::base::mail::rfc5322_date;
use crate::front::smtpd::command;
use crate::front::smtpd::dsn::{self, Dsn};
use crate::front::smtpd::message::{self, Data, DataReader};
use crate::intake::aliases::local_name;
use crate::intake::mailbox;
use crate::intake::{Refusal, RefusalKind};
use crate::protocol::Submission;

/// A message a session hands to the host: what [`Control::submit_with`] takes.
///
/// [`Control::submit_with`]: crate::front::control::Control::submit_with
pub struct Submit {
    /// The envelope's parts.
    pub submission: Submission,
    /// The message with its trace fields.
    pub content: Vec<u8>,
    /// The envelope's DSN properties.
    pub properties: Vec<Property>,
}

impl Session {
    pub(super) fn mail(&mut self, path: &str, parameters: &[command::Parameter]) {
        if self.greeted.is_none() {
            return self.error(503, "5.5.1", "send EHLO or HELO first");
        }
        if self.transaction.is_some() {
            return self.error(503, "5.5.1", "nested MAIL command");
        }
        if !self.may_send() {
            return self.refuse_relay();
        }
        let within_rate = self
            .shared
            .clients
            .as_ref()
            .is_none_or(|clients| clients.message(self.peer, &self.shared.config.clients));
        if !within_rate {
            self.reply(
                421,
                "4.7.0",
                "too many messages from your address, try again later",
            );
            self.mode = SessionMode::Closed;
            return;
        }
        let mut dsn = Dsn::default();
        for parameter in parameters {
            let value = parameter.value.as_deref();
            let outcome = match parameter.keyword.as_str() {
                "SIZE" => match value.and_then(|v| v.parse::<u64>().ok()) {
                    Some(size) if size > self.shared.intake.rules().max_message_size as u64 => {
                        let text = format!(
                            "message size exceeds the limit of {} bytes",
                            self.shared.intake.rules().max_message_size
                        );
                        return self.error(552, "5.3.4", &text);
                    }
                    Some(_) => Ok(()),
                    None => Err("SIZE takes a number of bytes".to_owned()),
                },
                "BODY" => match value.map(str::to_ascii_uppercase).as_deref() {
                    Some("7BIT" | "8BITMIME") => Ok(()),
                    _ => Err("BODY takes 7BIT or 8BITMIME".to_owned()),
                },
                // Who authenticated at a previous hop: taken and not relied on.
                "AUTH" => Ok(()),
                keyword @ ("RET" | "ENVID") => dsn.mail_parameter(keyword, value),
                other => {
                    let text = format!("the MAIL parameter {other} is not supported");
                    return self.error(555, "5.5.4", &text);
                }
            };
            if let Err(why) = outcome {
                return self.error(501, "5.5.4", &why);
            }
        }
        let sender = if path.is_empty() {
            None
        } else {
            match checked("SMTP", path) {
                Ok(address) => Some(address),
                Err(why) => return self.error(553, "5.1.7", &format!("sender {why}")),
            }
        };
        self.transaction = Some(Transaction {
            sender,
            recipients: Vec::new(),
            dsn,
        });
        self.reply(250, "2.1.0", "Ok");
    }

    pub(super) fn rcpt(&mut self, path: &str, parameters: &[command::Parameter]) {
        let address = self.recipient_address(path);
        let Some(transaction) = self.transaction.as_mut() else {
            return self.error(503, "5.5.1", "need MAIL before RCPT");
        };
        let max_recipients = self.shared.config.max_recipients;
        if transaction.recipients.len() >= max_recipients {
            let text = format!("too many recipients (at most {max_recipients} per message)");
            return self.reply(452, "4.5.3", &text);
        }
        let address = match address {
            Ok(address) => address,
            Err(why) => return self.error(553, "5.1.3", &format!("recipient {why}")),
        };
        let mut notify = None;
        let mut original = None;
        for parameter in parameters {
            let value = parameter.value.as_deref();
            let outcome = match parameter.keyword.as_str() {
                "NOTIFY" => dsn::notify(value).map(|n| notify = Some(n)),
                "ORCPT" => dsn::original_recipient(value).map(|o| original = Some(o)),
                other => {
                    let text = format!("the RCPT parameter {other} is not supported");
                    return self.error(555, "5.5.4", &text);
                }
            };
            if let Err(why) = outcome {
                return self.error(501, "5.5.4", &why);
            }
        }
        transaction.dsn.recipient(&address, notify, original);
        transaction.recipients.push(address);
        self.reply(250, "2.1.5", "Ok");
    }

    /// `TYPE:local-part` for a domain the listener maps to a type, else `SMTP:path`,
    /// checked; or why not.
    pub(super) fn recipient_address(&self, path: &str) -> Result<String, String> {
        // A path without a domain (`RCPT TO:<root>`, RFC 5321's `<postmaster>`) is a local
        // name: the submission path qualifies it and looks it up in the alias table.
        if let Some(name) = local_name(path).filter(|_| !path.contains(':')) {
            return Ok(name);
        }
        if let Some((local, domain)) = path.rsplit_once('@') {
            let domain = domain.to_ascii_lowercase();
            let mapped = self
                .shared
                .config
                .domain_types
                .iter()
                .find(|(d, _)| *d == domain);
            if let Some((_, address_type)) = mapped {
                return checked(address_type, local);
            }
        }
        checked("SMTP", path)
    }

    pub(super) fn data(&mut self) {
        let Some(transaction) = self.transaction.take() else {
            return self.error(503, "5.5.1", "need MAIL and RCPT before DATA");
        };
        if transaction.recipients.is_empty() {
            return self.error(554, "5.5.1", "no valid recipients");
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        self.deadline = std::time::Instant::now() + self.shared.config.message_time_limit;
        let reader = DataReader::new(self.shared.intake.rules().max_message_size);
        self.mode = SessionMode::Data(transaction, reader);
    }

    /// What the DATA command brought: the message to submit, or the reply why not.
    pub(super) fn message(&mut self, transaction: Transaction, data: Data) -> Option<Submit> {
        match data {
            Data::Message(content) => Some(self.submission(transaction, content)),
            Data::TooBig => {
                let text = format!(
                    "message size exceeds the limit of {} bytes",
                    self.shared.intake.rules().max_message_size
                );
                self.reply(552, "5.3.4", &text);
                None
            }
            Data::LineTooLong => {
                let text = format!(
                    "a line of the message is longer than {} octets",
                    message::MAX_TEXT_LINE
                );
                self.reply(500, "5.5.2", &text);
                None
            }
        }
    }

    /// The submission that puts the message into the Outbox as `submit` does.
    fn submission(&self, transaction: Transaction, content: Vec<u8>) -> Submit {
        let now = Timestamp::now();
        let content = message::with_trace(content, &self.received(now), &self.shared.hostname, now);
        let null_sender = transaction.sender.is_none();
        let sender = transaction
            .sender
            .unwrap_or_else(|| format!("SMTP:MAILER-DAEMON@{}", self.shared.hostname));
        let mut submission = Submission::new(&sender, transaction.recipients, content.len());
        submission.source = self.shared.source;
        let reports = transaction.dsn.reports();
        submission.delivery_report = reports.delivery && !null_sender;
        // A message from the null sender is itself a report: never answered with one.
        submission.no_non_delivery_report = !reports.non_delivery || null_sender;
        Submit {
            submission,
            content,
            properties: transaction.dsn.properties(),
        }
    }

    /// Answers DATA with what intake answered the submission: the queue id, or why not.
    pub fn submitted(&mut self, answer: Result<MessageId, Refusal>) {
        self.restart_clock();
        match answer {
            Ok(id) => self.reply(250, "2.0.0", &format!("Ok: queued as {id}")),
            Err(refusal) => {
                let message = refusal.message.replace(['\r', '\n'], " ");
                let (code, enhanced) = match refusal.kind {
                    RefusalKind::StoreFull => (452, "4.3.1"),
                    RefusalKind::Temporary => (451, "4.3.0"),
                    RefusalKind::BadAddress => (550, "5.1.3"),
                    RefusalKind::BadMessage => (554, "5.6.0"),
                };
                log::warn!("listener: {}: refused a message: {message}", self.peer);
                self.reply(code, enhanced, &message);
            }
        }
    }

    /// The `Received:` field of a message from this session.
    pub(super) fn received(&self, now: Timestamp) -> String {
        let (name, extended) = self
            .greeted
            .as_ref()
            .map(|(name, extended)| (name.as_str(), *extended))
            .unwrap_or(("unknown", false));
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        let protocol = match (extended, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        format!(
            "Received: from {name} ([{}])\r\n\tby {} (spooler-host) with {protocol};\r\n\t{}\r\n",
            self.peer,
            self.shared.hostname,
            rfc5322_date(now)
        )
    }
}

/// `address` of `address_type`, if its syntax is good for the type; or why not.
pub(super) fn checked(address_type: &str, address: &str) -> Result<String, String> {
    let address = Address::new(address_type, address).map_err(|e| e.to_string())?;
    match mailbox::syntax_error(&address) {
        Some(why) => Err(why),
        None => Ok(address.to_string()),
    }
}
