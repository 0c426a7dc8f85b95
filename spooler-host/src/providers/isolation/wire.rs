//! What crosses between the host and an isolated provider's process: length-prefixed frames
//! over Unix sockets, and the encoding of the provider-abi types in them.
//!
//! The encoding is a plain byte layout written and read by the same binary (the child is the
//! host's own executable run again), so it needs no versioning and no schema: every field in
//! order, integers little-endian, strings and byte strings behind a `u32` length. A frame that
//! does not decode means the child is not the program it should be, and the host treats it
//! like a crash. Message content does not travel in frames on the way to the child; it is in
//! the shared mapping of `content.rs`.

use std::io::{self, Read, Write};

use provider_abi::abi_stable::std_types::{ROption, RString, RVec};
use provider_abi::hook::HookActionAbi;
use provider_abi::preprocessor::PreprocessedAbi;
use provider_abi::transport::RecipientOutcomeAbi;
use provider_abi::{
    Address, Changes, DeliveryState, Direction, Envelope, ErrorKind, HookAction, InboundMessage,
    MessageId, Notice, Preprocessed, Priority, Property, ProviderError, ProviderState, Recipient,
    RecipientKind, RecipientOutcome, RecipientStatus, ReportRequest, Timestamp, Undeliverable,
};

/// The largest call or reply: inbound mail comes back in replies (a pull returns up to a
/// provider's whole batch), so this is generous; memory follows the bytes that arrive.
pub const MAX_FRAME: usize = 1 << 30;

/// The largest event (a notice, a status, a log record).
pub const MAX_EVENT: usize = 1 << 20;

/// Writes one frame: its length, then its bytes.
pub fn write_frame(to: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    let length = u32::try_from(frame.len())
        .ok()
        .filter(|&length| length as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut buffer = Vec::with_capacity(4 + frame.len());
    buffer.extend_from_slice(&length.to_le_bytes());
    buffer.extend_from_slice(frame);
    to.write_all(&buffer)
}

/// Reads one frame of at most `max` bytes into `buffer`; `Ok(false)` at a clean end of the
/// stream. The buffer grows with the bytes that arrive, not with the length announced.
pub fn read_frame(from: &mut impl Read, buffer: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let mut length = [0u8; 4];
    match from.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes (at most {max} here)"),
        ));
    }
    buffer.clear();
    from.take(length as u64).read_to_end(buffer)?;
    if buffer.len() < length {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(true)
}

/// Builds a frame.
#[derive(Default)]
pub struct Encoder(Vec<u8>);

impl Encoder {
    /// A frame starting with `tag`.
    pub fn new(tag: u8) -> Encoder {
        Encoder(vec![tag])
    }

    /// The finished frame.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.0.push(value);
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.u8(value.into())
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        // Lengths beyond u32 cannot occur: frames are capped far below.
        self.u32(value.len() as u32);
        self.0.extend_from_slice(value);
        self
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) -> &mut Self {
        match value {
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
            None => {
                self.u8(0);
            }
        }
        self
    }

    fn list<T>(&mut self, items: &[T], write: impl Fn(&mut Self, &T)) -> &mut Self {
        self.u32(items.len() as u32);
        for item in items {
            write(self, item);
        }
        self
    }

    pub fn strings(&mut self, strings: &[RString]) -> &mut Self {
        self.list(strings, |e, s| {
            e.str(s);
        })
    }

    pub fn optional_u32(&mut self, value: Option<u32>) -> &mut Self {
        self.option(value, |e, v| {
            e.u32(v);
        })
    }

    pub fn outcomes(&mut self, outcomes: &[RecipientOutcomeAbi]) -> &mut Self {
        self.list(outcomes, |e, o| {
            e.outcome(o);
        })
    }

    pub fn address(&mut self, address: &Address) -> &mut Self {
        self.str(address.address_type()).str(address.address())
    }

    pub fn addresses(&mut self, addresses: &[Address]) -> &mut Self {
        self.list(addresses, |e, a| {
            e.address(a);
        })
    }

    fn timestamp(&mut self, value: ROption<Timestamp>) -> &mut Self {
        self.option(value.into_option(), |e, t| {
            e.i64(t.0);
        })
    }

    fn recipient(&mut self, recipient: &Recipient) -> &mut Self {
        let status = &recipient.status;
        self.address(&recipient.address)
            .u8(recipient.kind as u8)
            .u8(status.state as u8)
            .option(status.transport.as_ref().into_option(), |e, t| {
                e.str(t);
            })
            .u32(status.attempts)
            .timestamp(status.next_attempt)
            .str(&status.last_answer)
            .str(&status.status_code)
            .str(&status.diagnostic)
            .bool(status.delay_warned)
            .bool(status.reported)
    }

    pub fn envelope(&mut self, envelope: &Envelope) -> &mut Self {
        self.u64(envelope.id.0)
            .address(&envelope.sender)
            .list(&envelope.recipients, |e, r| {
                e.recipient(r);
            })
            .bool(envelope.reports.delivery)
            .bool(envelope.reports.non_delivery)
            .u8(envelope.priority as u8)
            .i64(envelope.submitted_at.0)
            .timestamp(envelope.deferred_until)
            .timestamp(envelope.expires_at)
            .bool(envelope.delete_after_submission)
            .bool(envelope.is_report)
            .bool(envelope.held)
            .bool(envelope.preprocessed)
            .list(&envelope.properties, |e, p| {
                e.str(&p.name).str(&p.value);
            })
    }

    pub fn error(&mut self, error: &ProviderError) -> &mut Self {
        let kind = match error.kind() {
            ErrorKind::Temporary => 0,
            ErrorKind::Permanent => 1,
            ErrorKind::Configuration => 2,
            ErrorKind::Panicked => 3,
            ErrorKind::Unsupported => 4,
            ErrorKind::Full => 5,
            _ => 0,
        };
        self.u8(kind).str(error.message())
    }

    pub fn outcome(&mut self, outcome: &RecipientOutcomeAbi) -> &mut Self {
        match outcome.as_enum() {
            Ok(RecipientOutcome::Delivered { answer }) => self.u8(0).str(answer),
            Ok(RecipientOutcome::Deferred {
                retry_after_secs,
                reason,
            }) => self
                .u8(1)
                .option(retry_after_secs.into_option(), |e, s| {
                    e.u32(s);
                })
                .str(reason),
            Ok(RecipientOutcome::Failed {
                status_code,
                diagnostic,
                text,
            }) => self.u8(2).str(status_code).str(diagnostic).str(text),
            Ok(RecipientOutcome::NotMine) => self.u8(3),
            _ => self.u8(1).u8(0).str(UNKNOWN_OUTCOME),
        }
    }

    pub fn preprocessed(&mut self, result: &PreprocessedAbi) -> &mut Self {
        match result.as_enum() {
            Ok(Preprocessed::Accept(changes)) => self
                .u8(0)
                .option(changes.content.as_ref().into_option(), |e, c| {
                    e.bytes(c);
                })
                .list(&changes.add_recipients, |e, r| {
                    e.recipient(r);
                })
                .addresses(&changes.remove_recipients)
                .list(&changes.undeliverable, |e, u| {
                    e.address(&u.address).str(&u.reason);
                }),
            Ok(Preprocessed::Reject { reason }) => self.u8(1).str(reason),
            _ => self.u8(2),
        }
    }

    pub fn hook_action(&mut self, action: &HookActionAbi) -> &mut Self {
        match action.as_enum() {
            Ok(HookAction::Leave) => self.u8(0),
            Ok(HookAction::MoveTo { folder }) => self.u8(1).str(folder),
            Ok(HookAction::Delete) => self.u8(2),
            Ok(HookAction::Stop) => self.u8(3),
            _ => self.u8(4),
        }
    }

    pub fn inbound(&mut self, messages: &[InboundMessage]) -> &mut Self {
        self.list(messages, |e, m| {
            e.str(&m.source_id)
                .option(m.sender.as_ref().into_option(), |e, s| {
                    e.address(s);
                })
                .addresses(&m.recipients)
                .bytes(&m.content);
        })
    }

    pub fn direction(&mut self, direction: Direction) -> &mut Self {
        self.u8(match direction {
            Direction::Inbound => 0,
            Direction::Outbound => 1,
        })
    }

    pub fn notice(&mut self, notice: Notice) -> &mut Self {
        self.u8(match notice {
            Notice::NewMail => 0,
            Notice::BackOnline => 1,
            Notice::StatusChanged => 2,
            Notice::StoreChanged => 3,
            _ => u8::MAX,
        })
    }

    pub fn state(&mut self, state: ProviderState) -> &mut Self {
        self.u8(match state {
            ProviderState::Online => 0,
            ProviderState::Offline => 1,
            _ => 2,
        })
    }
}

/// What a provider answers when its outcome is newer than this host.
const UNKNOWN_OUTCOME: &str = "it answered with an outcome this host does not know";

/// A frame that does not read as it should.
#[derive(Debug)]
pub struct Malformed(pub String);

type Decoded<T> = Result<T, Malformed>;

/// Reads a frame.
pub struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    /// Reads `frame`, whose first byte is its tag.
    pub fn new(frame: &'a [u8]) -> Decoder<'a> {
        Decoder(frame)
    }

    fn take(&mut self, count: usize) -> Decoded<&'a [u8]> {
        if self.0.len() < count {
            return Err(Malformed(format!(
                "the frame ends {} bytes early",
                count - self.0.len()
            )));
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(taken)
    }

    pub fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Decoded<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn u32(&mut self) -> Decoded<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Decoded<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn i64(&mut self) -> Decoded<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn bytes(&mut self) -> Decoded<&'a [u8]> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    pub fn str(&mut self) -> Decoded<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|e| Malformed(format!("a string: {e}")))
    }

    fn string(&mut self) -> Decoded<RString> {
        Ok(self.str()?.into())
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Decoded<T>) -> Decoded<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            _ => read(self).map(Some),
        }
    }

    fn list<T>(&mut self, read: impl Fn(&mut Self) -> Decoded<T>) -> Decoded<RVec<T>> {
        let count = self.u32()? as usize;
        // A corrupt count must not reserve memory: the list grows as its items decode (each
        // takes at least a byte of the frame, so the loop ends with the frame).
        let mut items = RVec::with_capacity(count.min(64));
        for _ in 0..count {
            items.push(read(self)?);
        }
        Ok(items)
    }

    pub fn strings(&mut self) -> Decoded<RVec<RString>> {
        self.list(Self::string)
    }

    pub fn optional_u32(&mut self) -> Decoded<Option<u32>> {
        self.option(Self::u32)
    }

    pub fn outcomes(&mut self) -> Decoded<RVec<RecipientOutcomeAbi>> {
        self.list(Self::outcome)
    }

    pub fn address(&mut self) -> Decoded<Address> {
        let (address_type, address) = (self.str()?, self.str()?);
        Address::new(address_type, address).map_err(|e| Malformed(e.to_string()))
    }

    pub fn addresses(&mut self) -> Decoded<RVec<Address>> {
        self.list(Self::address)
    }

    fn timestamp(&mut self) -> Decoded<ROption<Timestamp>> {
        Ok(self.option(|d| d.i64().map(Timestamp))?.into())
    }

    fn recipient(&mut self) -> Decoded<Recipient> {
        let address = self.address()?;
        let kind = RecipientKind::from_number(self.u8()?.into());
        let state = DeliveryState::from_number(self.u8()?.into());
        Ok(Recipient {
            address,
            kind,
            status: RecipientStatus {
                state,
                transport: self.option(Self::string)?.into(),
                attempts: self.u32()?,
                next_attempt: self.timestamp()?,
                last_answer: self.string()?,
                status_code: self.string()?,
                diagnostic: self.string()?,
                delay_warned: self.bool()?,
                reported: self.bool()?,
            },
        })
    }

    pub fn envelope(&mut self) -> Decoded<Envelope> {
        Ok(Envelope {
            id: MessageId(self.u64()?),
            sender: self.address()?,
            recipients: self.list(Self::recipient)?,
            reports: ReportRequest {
                delivery: self.bool()?,
                non_delivery: self.bool()?,
            },
            priority: Priority::from_number(self.u8()?.into()),
            submitted_at: Timestamp(self.i64()?),
            deferred_until: self.timestamp()?,
            expires_at: self.timestamp()?,
            delete_after_submission: self.bool()?,
            is_report: self.bool()?,
            held: self.bool()?,
            preprocessed: self.bool()?,
            properties: self.list(|d| {
                Ok(Property {
                    name: d.string()?,
                    value: d.string()?,
                })
            })?,
        })
    }

    pub fn error(&mut self) -> Decoded<ProviderError> {
        let kind = match self.u8()? {
            1 => ErrorKind::Permanent,
            2 => ErrorKind::Configuration,
            3 => ErrorKind::Panicked,
            4 => ErrorKind::Unsupported,
            5 => ErrorKind::Full,
            _ => ErrorKind::Temporary,
        };
        Ok(ProviderError::new(kind, self.str()?))
    }

    pub fn outcome(&mut self) -> Decoded<RecipientOutcomeAbi> {
        let outcome = match self.u8()? {
            0 => RecipientOutcome::delivered(self.str()?),
            1 => {
                let retry = self.option(Self::u32)?;
                RecipientOutcome::deferred(self.str()?, retry)
            }
            2 => RecipientOutcome::failed(self.str()?, self.str()?, self.str()?),
            3 => RecipientOutcome::NotMine,
            other => return Err(Malformed(format!("outcome {other}"))),
        };
        Ok(RecipientOutcomeAbi::new(outcome))
    }

    pub fn preprocessed(&mut self) -> Decoded<PreprocessedAbi> {
        let result = match self.u8()? {
            0 => Preprocessed::Accept(Changes {
                content: self.option(|d| Ok(RVec::from(d.bytes()?)))?.into(),
                add_recipients: self.list(Self::recipient)?,
                remove_recipients: self.addresses()?,
                undeliverable: self.list(|d| {
                    Ok(Undeliverable {
                        address: d.address()?,
                        reason: d.string()?,
                    })
                })?,
            }),
            1 => Preprocessed::Reject {
                reason: self.string()?,
            },
            _ => Preprocessed::Reject {
                reason: "the preprocessor answered with a result this host does not know".into(),
            },
        };
        Ok(PreprocessedAbi::new(result))
    }

    pub fn hook_action(&mut self) -> Decoded<HookActionAbi> {
        let action = match self.u8()? {
            0 => HookAction::Leave,
            1 => HookAction::MoveTo {
                folder: self.string()?,
            },
            2 => HookAction::Delete,
            3 => HookAction::Stop,
            // A newer action than this host knows: the message goes on as if untouched.
            _ => HookAction::Leave,
        };
        Ok(HookActionAbi::new(action))
    }

    pub fn inbound(&mut self) -> Decoded<RVec<InboundMessage>> {
        self.list(|d| {
            Ok(InboundMessage {
                source_id: d.string()?,
                sender: d.option(Self::address)?.into(),
                recipients: d.addresses()?,
                content: d.bytes()?.into(),
            })
        })
    }

    pub fn notice(&mut self) -> Decoded<Option<Notice>> {
        Ok(match self.u8()? {
            0 => Some(Notice::NewMail),
            1 => Some(Notice::BackOnline),
            2 => Some(Notice::StatusChanged),
            3 => Some(Notice::StoreChanged),
            _ => None,
        })
    }

    pub fn state(&mut self) -> Decoded<ProviderState> {
        Ok(match self.u8()? {
            0 => ProviderState::Online,
            1 => ProviderState::Offline,
            _ => ProviderState::Error,
        })
    }

    pub fn direction(&mut self) -> Decoded<Direction> {
        Ok(match self.u8()? {
            0 => Direction::Inbound,
            _ => Direction::Outbound,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_as_written() {
        let mut envelope = Envelope::new(
            Address::parse("alice@example.org").unwrap(),
            vec![
                Recipient::new(
                    Address::parse("bob@example.net").unwrap(),
                    RecipientKind::Cc,
                ),
                Recipient::new(Address::parse("FAX:+331234").unwrap(), RecipientKind::Bcc),
            ],
        );
        envelope.id = MessageId(0xfeed);
        envelope.recipients[0].status.transport = ROption::RSome("relay".into());
        envelope.recipients[0].status.next_attempt = ROption::RSome(Timestamp(42));
        envelope.expires_at = ROption::RSome(Timestamp(-7));
        envelope.properties.push(Property {
            name: "x".into(),
            value: "y".into(),
        });
        envelope.held = true;
        let mut encoder = Encoder::new(9);
        encoder.envelope(&envelope).u32(77);
        let frame = encoder.into_bytes();
        let mut decoder = Decoder::new(&frame[1..]);
        assert_eq!(decoder.envelope().unwrap(), envelope);
        assert_eq!(decoder.u32().unwrap(), 77);
    }

    #[test]
    fn a_short_frame_is_malformed_not_a_panic() {
        let mut encoder = Encoder::new(0);
        encoder.str("a longer string");
        let frame = encoder.into_bytes();
        for cut in 1..frame.len() {
            assert!(Decoder::new(&frame[1..cut]).str().is_err());
        }
    }

    #[test]
    fn results_read_back_as_written() {
        let outcome =
            RecipientOutcomeAbi::new(RecipientOutcome::failed("5.1.1", "smtp; 550", "no"));
        let changes = PreprocessedAbi::new(Preprocessed::Accept(Changes {
            content: ROption::RSome(b"new".to_vec().into()),
            ..Changes::default()
        }));
        let inbound = vec![InboundMessage {
            source_id: "uid-1".into(),
            sender: ROption::RNone,
            recipients: vec![Address::parse("LOCAL:bob").unwrap()].into(),
            content: b"Subject: hi\r\n\r\n".to_vec().into(),
        }];
        let mut encoder = Encoder::new(0);
        encoder
            .outcome(&outcome)
            .preprocessed(&changes)
            .inbound(&inbound)
            .error(&ProviderError::permanent("gone"));
        let frame = encoder.into_bytes();
        let mut decoder = Decoder::new(&frame[1..]);
        assert_eq!(decoder.outcome().unwrap(), outcome);
        assert_eq!(decoder.preprocessed().unwrap(), changes);
        assert_eq!(decoder.inbound().unwrap().to_vec(), inbound);
        assert_eq!(decoder.error().unwrap(), ProviderError::permanent("gone"));
    }
}
