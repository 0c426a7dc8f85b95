//! [`ScriptedTransport`]: a transport that answers what the test scripted and records what it
//! was asked, for tests of code that drives transports (the host's routing and retries)
//! without a messaging system.
//!
//! The script is shared by every handle and every instance made from it, so a test changes
//! it while the code under test holds the transport, and sees the calls of all the
//! instances the host opened.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use provider_abi::{
    Address, Envelope, InboundMessage, MessageRef, ProviderError, RecipientOutcome, Transport,
};

/// What one `submit` call does instead of answering each recipient as scripted; see
/// [`ScriptedTransport::then`].
#[derive(Debug, Clone)]
pub enum Call {
    /// Answers these outcomes, whatever the recipients (a wrong count too).
    Outcomes(Vec<RecipientOutcome>),
    /// Fails the whole call.
    Fail(ProviderError),
    /// Waits this long, then answers each recipient as scripted.
    Delay(Duration),
    /// Panics with this message.
    Panic(String),
}

/// One `submit` call as the transport received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The message's envelope.
    pub envelope: Envelope,
    /// The recipients it was asked to deliver, in order.
    pub recipients: Vec<Address>,
    /// The message's content.
    pub content: Vec<u8>,
}

/// A transport that answers as scripted and records every call.
///
/// Each recipient gets its own scripted answer, or else the answer for all (at first
/// delivered); a [`Call`] queued with [`then`](ScriptedTransport::then) replaces the answers
/// of the next call. Inbound messages added with
/// [`add_inbound`](ScriptedTransport::add_inbound) are pulled until acknowledged. Clones
/// share the script; [`transport_object`](crate::transport_object) puts one behind the panic
/// barrier as the host holds it.
///
/// ```
/// use provider_abi::{ProviderError, RecipientOutcome};
/// use provider_testkit::{message, submit, transport_object, Call, ScriptedTransport};
///
/// let script = ScriptedTransport::new(&["SMTP"]);
/// script
///     .answer("SMTP:bob@example.net", RecipientOutcome::deferred("greylisted", Some(300)))
///     .then(Call::Fail(ProviderError::temporary("connection refused")))
///     .then(Call::Panic("out of sockets".into()));
/// let mut transport = transport_object(script.clone());
/// let mail = message(&["SMTP:bob@example.net", "SMTP:carol@example.org"], "Subject: hi\r\n\r\n");
///
/// let refused = submit(&mut transport, &mail).unwrap_err();
/// assert_eq!(refused.message(), "connection refused");
/// let panicked = submit(&mut transport, &mail).unwrap_err();
/// assert_eq!(panicked.message(), "submit panicked: out of sockets");
/// let outcomes = submit(&mut transport, &mail).unwrap();
/// assert_eq!(outcomes[0], RecipientOutcome::deferred("greylisted", Some(300)));
/// assert!(matches!(outcomes[1], RecipientOutcome::Delivered { .. }));
/// assert_eq!(script.submissions().len(), 3);
/// assert_eq!(script.submissions()[2].recipients[1].to_string(), "SMTP:carol@example.org");
/// ```
#[derive(Clone)]
pub struct ScriptedTransport {
    script: Arc<Mutex<Script>>,
}

struct Script {
    address_types: Vec<String>,
    answers: Vec<(Address, RecipientOutcome)>,
    answer_all: RecipientOutcome,
    calls: VecDeque<Call>,
    submissions: Vec<Submission>,
    inbound: Vec<InboundMessage>,
    acknowledged: Vec<String>,
    online: bool,
    poll_interval_secs: Option<u32>,
    flushes: u32,
}

impl ScriptedTransport {
    /// A transport claiming `address_types`, online, delivering every recipient, with no
    /// inbound mail and no poll interval.
    pub fn new(address_types: &[&str]) -> ScriptedTransport {
        let script = Script {
            address_types: address_types.iter().map(|t| t.to_string()).collect(),
            answers: Vec::new(),
            answer_all: RecipientOutcome::delivered("250 2.0.0 Ok: scripted"),
            calls: VecDeque::new(),
            submissions: Vec::new(),
            inbound: Vec::new(),
            acknowledged: Vec::new(),
            online: true,
            poll_interval_secs: None,
            flushes: 0,
        };
        ScriptedTransport {
            script: Arc::new(Mutex::new(script)),
        }
    }

    /// From now on answers `outcome` for `recipient` (`TYPE:address`).
    ///
    /// # Panics
    ///
    /// If `recipient` is not an address.
    pub fn answer(&self, recipient: &str, outcome: RecipientOutcome) -> &Self {
        let address = Address::parse(recipient).expect("a valid address");
        let mut script = self.script.lock();
        script.answers.retain(|(a, _)| a != &address);
        script.answers.push((address, outcome));
        self
    }

    /// From now on answers `outcome` for every recipient without an answer of its own.
    pub fn answer_all(&self, outcome: RecipientOutcome) -> &Self {
        self.script.lock().answer_all = outcome;
        self
    }

    /// Makes the first `submit` call that no earlier [`Call`] is queued for do `call`.
    pub fn then(&self, call: Call) -> &Self {
        self.script.lock().calls.push_back(call);
        self
    }

    /// Every `submit` call received so far, by any instance, in order.
    pub fn submissions(&self) -> Vec<Submission> {
        self.script.lock().submissions.clone()
    }

    /// Adds a message for `pull` to hand out until it is acknowledged.
    pub fn add_inbound(&self, message: InboundMessage) -> &Self {
        self.script.lock().inbound.push(message);
        self
    }

    /// The source ids acknowledged so far, in order.
    pub fn acknowledged(&self) -> Vec<String> {
        self.script.lock().acknowledged.clone()
    }

    /// Sets what `is_online` answers.
    pub fn set_online(&self, online: bool) -> &Self {
        self.script.lock().online = online;
        self
    }

    /// Sets what `poll_interval_secs` answers.
    pub fn set_poll_interval(&self, secs: Option<u32>) -> &Self {
        self.script.lock().poll_interval_secs = secs;
        self
    }

    /// How many times `flush` was called.
    pub fn flushes(&self) -> u32 {
        self.script.lock().flushes
    }
}

impl Script {
    fn answer_for(&self, recipient: &Address) -> RecipientOutcome {
        self.answers
            .iter()
            .find(|(a, _)| a == recipient)
            .map_or(&self.answer_all, |(_, outcome)| outcome)
            .clone()
    }
}

impl Transport for ScriptedTransport {
    fn address_types(&self) -> Vec<String> {
        self.script.lock().address_types.clone()
    }

    fn submit(
        &mut self,
        message: MessageRef<'_>,
        recipients: &[Address],
    ) -> Result<Vec<RecipientOutcome>, ProviderError> {
        let call = {
            let mut script = self.script.lock();
            script.submissions.push(Submission {
                envelope: message.envelope.clone(),
                recipients: recipients.to_vec(),
                content: message.content.to_vec(),
            });
            script.calls.pop_front()
        };
        match call {
            Some(Call::Outcomes(outcomes)) => return Ok(outcomes),
            Some(Call::Fail(error)) => return Err(error),
            Some(Call::Panic(text)) => panic!("{text}"),
            Some(Call::Delay(delay)) => std::thread::sleep(delay),
            None => {}
        }
        let script = self.script.lock();
        Ok(recipients.iter().map(|r| script.answer_for(r)).collect())
    }

    fn pull(&mut self) -> Result<Vec<InboundMessage>, ProviderError> {
        Ok(self.script.lock().inbound.clone())
    }

    fn acknowledge(&mut self, source_id: &str) -> Result<(), ProviderError> {
        let mut script = self.script.lock();
        script.inbound.retain(|m| m.source_id != source_id);
        script.acknowledged.push(source_id.to_owned());
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ProviderError> {
        self.script.lock().flushes += 1;
        Ok(())
    }

    fn is_online(&mut self) -> bool {
        self.script.lock().online
    }

    fn poll_interval_secs(&self) -> Option<u32> {
        self.script.lock().poll_interval_secs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;
    use std::time::Instant;

    use provider_abi::abi_stable::std_types::ROption;
    use provider_abi::{ErrorKind, Library};

    use super::*;
    use crate::{check_pull, check_transport, message, submit, transport_object};

    static CHECKED: LazyLock<ScriptedTransport> =
        LazyLock::new(|| ScriptedTransport::new(&["TEST"]));

    fn checked() -> Library {
        Library::new("scripted", "0.1.0").transport("scripted", &["TEST"], |_| Ok(CHECKED.clone()))
    }

    fn inbound(source_id: &str) -> InboundMessage {
        InboundMessage {
            source_id: source_id.into(),
            sender: ROption::RNone,
            recipients: Default::default(),
            content: b"Subject: in\r\n\r\n".to_vec().into(),
        }
    }

    #[test]
    fn it_keeps_the_transport_contract_outbound_and_inbound() {
        let recipients = ["TEST:a", "TEST:b"];
        assert_eq!(
            check_transport(checked, "scripted", "", &recipients),
            Ok(())
        );
        CHECKED.add_inbound(inbound("1")).add_inbound(inbound("2"));
        assert_eq!(check_pull(checked, "scripted", ""), Ok(2));
        assert_eq!(CHECKED.acknowledged(), ["1", "2"]);
        assert!(
            CHECKED.submissions().len() > 3,
            "every instance records into one script"
        );
    }

    #[test]
    fn each_recipient_gets_its_answer_and_a_scripted_call_replaces_them_once() {
        let script = ScriptedTransport::new(&["SMTP"]);
        let failed = RecipientOutcome::failed("5.1.1", "smtp; 550 no such user", "No such user.");
        script
            .answer("SMTP:gone@example.net", failed.clone())
            .answer_all(RecipientOutcome::NotMine)
            .then(Call::Outcomes(vec![RecipientOutcome::NotMine]))
            .then(Call::Delay(Duration::from_millis(50)));
        let mail = message(&["SMTP:gone@example.net", "SMTP:other@example.net"], "x");
        let mut first = transport_object(script.clone());
        let mut second = transport_object(script.clone());

        assert_eq!(
            submit(&mut first, &mail),
            Ok(vec![RecipientOutcome::NotMine])
        );
        let started = Instant::now();
        let answered = vec![failed, RecipientOutcome::NotMine];
        assert_eq!(submit(&mut second, &mail), Ok(answered.clone()));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(submit(&mut first, &mail), Ok(answered));
        let recorded = script.submissions();
        assert_eq!(recorded.len(), 3);
        assert_eq!(recorded[1].content, b"x");
        assert_eq!(recorded[1].envelope, mail.envelope);
    }

    #[test]
    fn what_it_says_about_itself_is_scripted_too() {
        let script = ScriptedTransport::new(&["FAX"]);
        let mut transport = transport_object(script.clone());
        assert_eq!(transport.is_online().into_result(), Ok(true));
        assert_eq!(
            transport.poll_interval_secs().into_result(),
            Ok(ROption::RNone)
        );
        script.set_online(false).set_poll_interval(Some(30));
        assert_eq!(transport.is_online().into_result(), Ok(false));
        assert_eq!(
            transport.poll_interval_secs().into_result(),
            Ok(ROption::RSome(30))
        );
        transport.flush().into_result().unwrap();
        assert_eq!(script.flushes(), 1);
        let types = transport.address_types().into_result().unwrap();
        assert_eq!(types.as_slice(), ["FAX"]);

        script.then(Call::Panic("boom".into()));
        let error = submit(&mut transport, &message(&["FAX:123"], "")).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Panicked);
    }
}
