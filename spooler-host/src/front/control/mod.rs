//! The control socket: what the host answers to the command line and to programs.
//! Submissions (through intake), listings (through the store thread), queue commands
//! (hold, release, delete, flush, to the queue and inbound managers), status and watching.
//! Each connection gets a thread; who may connect is `socket`'s job, the language is
//! [`crate::protocol`]'s.
//!
//! May call: every layer below the front ends. `sendmail -bs` sessions are handed to the
//! SMTP listener through a function the daemon gives, not by importing it.

pub mod socket;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use provider_abi::store::OUTBOX;
use provider_abi::{MessageId, ProviderKind, Timestamp};

use crate::base::bounce::BounceClass;
use crate::inbound::InboundCommand;
use crate::intake::{checks, Intake, Refusal, RefusalKind};
use crate::protocol::{
    BackoffView, Failure, FolderView, HostView, MessageView, Request, Response, ShapeView,
    StatusView, Submission, TroubleView,
};
use crate::providers::quarantine::Quarantine;
use crate::providers::routing_table::RoutesInForce;
use crate::providers::status::StatusTable;
use crate::queue::board::DestinationBoard;
use crate::queue::{QueueCommand, QueueReply};
use crate::store::thread::StoreClient;
use crate::store::watchers::Watchers;
use socket::Access;

/// The most messages one listing request answers with.
pub const PAGE: u32 = 1000;

/// How long the host waits for a client's next bytes, or for a client to take an answer,
/// before it closes the connection: a client that stops midway holds no thread for ever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// How many troubled destinations `status` lists, the most troubled first.
const TROUBLES_SHOWN: usize = 50;

/// What the control threads need: the parts of the running spooler they answer for.
#[derive(Clone)]
pub struct Control {
    intake: Intake,
    store: StoreClient,
    routes: RoutesInForce,
    status: StatusTable,
    queue: Sender<QueueCommand>,
    inbound: Sender<InboundCommand>,
    watchers: Watchers,
    quarantine: Quarantine,
    board: DestinationBoard,
    /// Serves `sendmail -bs`: an SMTP session over the client's connection (the daemon
    /// hands the SMTP listener's session here, so that neither front end imports the other).
    smtp_session: Arc<dyn Fn(UnixStream) + Send + Sync>,
    /// Answers `Bans` and `Unban` (the SMTP listener's, handed the same way).
    smtp_bans: SmtpBans,
}

/// Answers [`Request::Bans`] and [`Request::Unban`].
pub type SmtpBans = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The running spooler's parts the control socket reaches.
pub struct Parts {
    /// The way into the Outbox.
    pub intake: Intake,
    /// The store thread, for listings.
    pub store: StoreClient,
    /// The routing table in force.
    pub routes: RoutesInForce,
    /// The providers' status rows.
    pub status: StatusTable,
    /// The queue manager: hold, release, delete, flush.
    pub queue: Sender<QueueCommand>,
    /// The inbound manager: flush.
    pub inbound: Sender<InboundCommand>,
    /// The clients watching for new mail.
    pub watchers: Watchers,
    /// Why messages are held for crashing providers.
    pub quarantine: Quarantine,
    /// The destinations backing off, and their trouble.
    pub board: DestinationBoard,
    /// Serves an SMTP session over a client's connection (`sendmail -bs`).
    pub smtp_session: Arc<dyn Fn(UnixStream) + Send + Sync>,
    /// Lists and lifts the SMTP listeners' bans.
    pub smtp_bans: SmtpBans,
}

impl Control {
    /// The control state over the running spooler's parts.
    pub fn new(parts: Parts) -> Control {
        Control {
            intake: parts.intake,
            store: parts.store,
            routes: parts.routes,
            status: parts.status,
            queue: parts.queue,
            inbound: parts.inbound,
            watchers: parts.watchers,
            quarantine: parts.quarantine,
            board: parts.board,
            smtp_session: parts.smtp_session,
            smtp_bans: parts.smtp_bans,
        }
    }

    /// Answers one client's requests until it goes away; `access` says what it may ask.
    pub(crate) fn converse(&self, stream: UnixStream, access: Access) {
        let Some((mut writer, peer)) = accepted(&stream, access) else {
            return;
        };
        let mut reader = BufReader::new(stream);
        loop {
            let (request, content) =
                match read_request(&mut reader, self.intake.rules().max_message_size) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return,
                    Err(ReadError::Unreadable(message)) => {
                        send(&mut writer, &Response::error(Failure::Refused, message));
                        continue;
                    }
                    Err(ReadError::Refused(failure, message)) => {
                        // What follows is not read: answer, and close the connection, so that a
                        // client still writing gets an error instead of waiting.
                        send(&mut writer, &Response::error(failure, message));
                        return;
                    }
                    Err(ReadError::Gone(error)) => {
                        log::debug!("control: a client went away: {error}");
                        return;
                    }
                };
            if request == Request::Watch {
                self.watch(&mut writer);
                return;
            }
            if request == Request::Smtp {
                // The client waits for the greeting: anything already read would be lost.
                if !reader.buffer().is_empty() {
                    let refusal =
                        "an SMTP session starts after the greeting; send nothing before it";
                    send(&mut writer, &Response::error(Failure::Refused, refusal));
                    return;
                }
                (self.smtp_session)(reader.into_inner());
                return;
            }
            if let Err(refusal) = peer.may_ask(&request) {
                send(&mut writer, &Response::error(Failure::Refused, refusal));
                return;
            }
            let sender = match (&request, access) {
                (Request::Submit(submission), Access::Public) => Some(submission.sender.clone()),
                _ => None,
            };
            let response = self.answer(request, content);
            if let (Some(sender), Response::Submitted { id }) = (sender, &response) {
                log::info!("{id}: from {peer} on the public socket, sender {sender}");
            }
            if !send(&mut writer, &response) {
                return;
            }
        }
    }

    /// Streams events to a watching client until it goes away.
    fn watch(&self, writer: &mut UnixStream) {
        let events = self.watchers.subscribe();
        if !send(writer, &Response::Watching) {
            return;
        }
        for event in events {
            if !send(writer, &Response::Event(event)) {
                return;
            }
        }
    }

    /// The answer to a request that is not a submission, a watch or an SMTP session: what
    /// the HTTP admin API asks.
    pub fn answer_query(&self, request: Request) -> Response {
        match request {
            Request::Submit(_) | Request::Watch | Request::Smtp => Response::error(
                Failure::Refused,
                "submissions, watching and SMTP sessions go through the control socket",
            ),
            request => self.answer(request, Vec::new()),
        }
    }

    fn answer(&self, request: Request, content: Vec<u8>) -> Response {
        let result = match request {
            Request::Submit(submission) => return self.submit(&submission, content),
            Request::Show { id, content } => return self.show(&id, content),
            Request::List {
                folder,
                after,
                limit,
            } => self.list(&folder, after.as_deref(), limit),
            Request::Queue { after, limit } => self.list(OUTBOX, after.as_deref(), limit),
            Request::Shape { top } => self.shape(top),
            Request::Folders => self
                .store
                .folders()
                .map(|folders| Response::Folders {
                    folders: folders.iter().map(FolderView::from).collect(),
                })
                .map_err(|e| e.to_string()),
            Request::Flush { transport } => self.flush(transport),
            Request::Status => self.status(),
            Request::Hold { id } => self.ask_queue(&id, QueueCommand::Hold),
            Request::Release { id } => self.ask_queue(&id, QueueCommand::Release),
            Request::FlushMessage { id } => self.ask_queue(&id, QueueCommand::FlushMessage),
            Request::Delete { id } => self.ask_queue(&id, QueueCommand::Delete),
            Request::Watch | Request::Smtp => unreachable!("answered by `converse`"),
            Request::Bans | Request::Unban { .. } => return (self.smtp_bans)(&request),
            Request::Verify { addresses } => {
                let routes = self.routes.current();
                let verdicts = addresses
                    .iter()
                    .flat_map(|given| checks::verify(given, self.intake.rules(), &routes))
                    .collect();
                Ok(Response::Verified { verdicts })
            }
            Request::ReloadAliases => self
                .intake
                .rules()
                .aliases
                .reload()
                .map(|(aliases, problems)| Response::AliasesRead { aliases, problems }),
        };
        result.unwrap_or_else(|message| Response::error(Failure::Refused, message))
    }

    fn flush(&self, transport: Option<String>) -> Result<Response, String> {
        if let Some(name) = &transport {
            if !self
                .routes
                .current()
                .transports
                .iter()
                .any(|t| &t.name == name)
            {
                return Err(format!("there is no transport named `{name}`"));
            }
        }
        self.inbound
            .send(InboundCommand::Fetch(transport.clone()))
            .ok();
        self.queue
            .send(QueueCommand::Flush(transport))
            .map(|()| Response::Done)
            .map_err(|_| "the host is shutting down".into())
    }

    fn ask_queue(
        &self,
        id: &str,
        command: fn(MessageId, QueueReply) -> QueueCommand,
    ) -> Result<Response, String> {
        let id = parse_id(id)?;
        let (reply, answer) = bounded(1);
        self.queue
            .send(command(id, reply))
            .map_err(|_| "the host is shutting down".to_owned())?;
        answer
            .recv()
            .map_err(|_| "the host is shutting down".to_owned())?
            .map(|()| Response::Done)
    }

    /// The status table with the queue's counts, from count queries: it costs the same with
    /// ten or a hundred thousand messages queued.
    fn status(&self) -> Result<Response, String> {
        let now = Timestamp::now();
        let counts = self.store.queue_counts().map_err(|e| e.to_string())?;
        let hosts = self.store.hosts().map_err(|e| e.to_string())?;
        let providers = self
            .status
            .rows()
            .iter()
            .map(|row| {
                let mut view = StatusView::from(row);
                if row.kind == ProviderKind::Transport {
                    let waiting = counts.waiting.iter().find(|w| w.transport == row.name);
                    view.queued = Some(waiting.map_or(0, |w| w.recipients));
                }
                view
            })
            .collect();
        Ok(Response::Status {
            providers,
            quarantined: self.quarantine.suspected() as u64,
            outbox: counts.messages,
            hosts: hosts.iter().map(HostView::from).collect(),
            // A store that cannot tell (built against provider-abi before 1.4) shows none.
            store_bytes: self.store.size_on_disk().ok(),
            troubles: self
                .board
                .troubles(now)
                .into_iter()
                .take(TROUBLES_SHOWN)
                .map(|trouble| TroubleView {
                    transport: trouble.transport,
                    domain: trouble.domain,
                    since: trouble.since.0,
                    deferred: by_name(&trouble.deferred),
                    failed: by_name(&trouble.failed),
                })
                .collect(),
            backing_off: self
                .board
                .backoffs(now)
                .into_iter()
                .map(|backoff| BackoffView {
                    transport: backoff.transport,
                    domain: backoff.domain,
                    until: backoff.until.0,
                    reason: backoff.reason,
                })
                .collect(),
        })
    }

    /// The queue's shape in qshape's buckets, counted by the store (one count query, never a
    /// listing), so it costs little however long the queue.
    fn shape(&self, top: Option<usize>) -> Result<Response, String> {
        let minutes = ShapeView::QSHAPE_MINUTES;
        let seconds = minutes.iter().map(|m| m * 60).collect();
        let cells = self
            .store
            .queue_shape(Timestamp::now(), seconds)
            .map_err(|e| e.to_string())?;
        let mut shape = ShapeView::new(&minutes, &cells, top);
        let backoffs = self.board.backoffs(Timestamp::now());
        for row in &mut shape.domains {
            row.backing_off_until = backoffs
                .iter()
                .filter(|backoff| backoff.domain.eq_ignore_ascii_case(&row.domain))
                .map(|backoff| backoff.until.0)
                .max();
        }
        Ok(Response::Shape(shape))
    }

    /// Checks the submission and commits it; each refusal says what kind it is, so that
    /// `submit` exits with the code its caller expects.
    fn submit(&self, submission: &Submission, content: Vec<u8>) -> Response {
        match self.intake.submit(submission, content, Vec::new()) {
            Ok(id) => Response::Submitted { id: id.to_string() },
            Err(refusal) => refusal.into(),
        }
    }

    fn show(&self, id: &str, content: bool) -> Response {
        let id = match parse_id(id) {
            Ok(id) => id,
            Err(message) => return Response::error(Failure::Refused, message),
        };
        match self.store.get(id) {
            Ok(Some(message)) => {
                Response::Message(self.explained(MessageView::of_message(&message, content)))
            }
            Ok(None) => Response::error(Failure::NotFound, format!("there is no message {id}")),
            Err(error) => Response::error(Failure::Temporary, error.to_string()),
        }
    }

    /// One page of a folder: the client asks for the next with the cursor it gets, so no
    /// listing makes the host hold a whole folder.
    fn list(
        &self,
        folder: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Response, String> {
        let after = after.map(parse_id).transpose()?;
        let limit = limit.unwrap_or(PAGE).clamp(1, PAGE);
        let messages = self
            .store
            .list_page(folder, after, limit)
            .map_err(|e| e.to_string())?;
        let next = (messages.len() == limit as usize)
            .then(|| messages.last().map(|m| m.envelope.id.to_string()))
            .flatten();
        Ok(Response::Messages {
            messages: messages
                .iter()
                .map(|summary| self.explained(MessageView::of_summary(summary)))
                .collect(),
            next,
        })
    }

    /// The view with the reason it is held, when the quarantine holds it.
    fn explained(&self, mut view: MessageView) -> MessageView {
        if view.held {
            view.held_because = view
                .id
                .parse()
                .ok()
                .and_then(|id| self.quarantine.suspicion(id))
                .map(|suspicion| suspicion.to_string());
        }
        view
    }
}

/// The writing half of a client's connection and who the client is, with timeouts set; or
/// nothing if it may not connect (it is told why) or the connection fails.
fn accepted(stream: &UnixStream, access: Access) -> Option<(UnixStream, socket::Peer)> {
    let mut writer = stream
        .try_clone()
        .map_err(|error| log::warn!("control: {error}"))
        .ok()?;
    let peer = socket::peer(stream, access)
        .map_err(|refusal| send(&mut writer, &Response::error(Failure::Refused, refusal)))
        .ok()?;
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .and_then(|()| writer.set_write_timeout(Some(CLIENT_TIMEOUT)))
        .map_err(|error| log::warn!("control: {error}"))
        .ok()?;
    Some((writer, peer))
}

/// The longest request line a client may send. Requests are small (a submission with
/// thousands of recipients fits; its content follows the line), and a line without end must
/// not make the host hold it all.
pub const MAX_REQUEST_LINE: usize = 1 << 20;

/// Why no request could be read from a client.
#[derive(Debug)]
pub enum ReadError {
    /// The line is not a request: answer so, and read the next.
    Unreadable(String),
    /// Answer so, and close: what follows the line cannot be read as requests.
    Refused(Failure, String),
    /// The connection failed.
    Gone(std::io::Error),
}

/// Reads the next request line and, for a submission, the content that follows it; `None`
/// when the client has closed the connection. A line over [`MAX_REQUEST_LINE`] or content
/// over `max_message_size` is refused before it is read, so a client cannot make the host
/// hold more than these.
pub fn read_request(
    reader: &mut impl BufRead,
    max_message_size: usize,
) -> Result<Option<(Request, Vec<u8>)>, ReadError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(ReadError::Gone)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() > MAX_REQUEST_LINE && !line.ends_with(b"\n") {
        return Err(ReadError::Refused(
            Failure::Refused,
            format!(
                "the request line is longer than {MAX_REQUEST_LINE} bytes; a request is one line \
             of JSON, and a submission's content follows it"
            ),
        ));
    }
    let request = serde_json::from_slice::<Request>(&line).map_err(|error| {
        ReadError::Unreadable(format!("not a request this host understands: {error}"))
    })?;
    let mut content = Vec::new();
    if let Request::Submit(submission) = &request {
        if submission.content_length > max_message_size {
            return Err(ReadError::Refused(
                Failure::BadMessage,
                format!(
                    "the message is {} bytes; this spooler takes at most {max_message_size} bytes \
                 (limits.max_message_size)",
                    submission.content_length
                ),
            ));
        }
        content = vec![0; submission.content_length];
        reader.read_exact(&mut content).map_err(|error| {
            ReadError::Refused(
                Failure::BadMessage,
                format!("the message content ended early: {error}"),
            )
        })?;
    }
    Ok(Some((request, content)))
}

fn parse_id(id: &str) -> Result<MessageId, String> {
    id.parse()
        .map_err(|_| format!("`{id}` is not a message id (16 hex digits)"))
}

/// Writes one response line; false if the client went away.
pub(crate) fn send(writer: &mut UnixStream, response: &Response) -> bool {
    let mut text = serde_json::to_string(response).expect("responses serialize");
    text.push('\n');
    writer.write_all(text.as_bytes()).is_ok()
}

impl From<Refusal> for Response {
    /// What the client is told of a refused submission: a failure its client turns into
    /// the exit code its caller expects.
    fn from(refusal: Refusal) -> Response {
        let failure = match refusal.kind {
            RefusalKind::BadAddress => Failure::BadAddress,
            RefusalKind::BadMessage => Failure::BadMessage,
            RefusalKind::Temporary | RefusalKind::StoreFull => Failure::Temporary,
        };
        Response::error(failure, refusal.message)
    }
}

/// Counts by class, keyed by the class's name as `show --json` gives it.
fn by_name(counts: &BTreeMap<BounceClass, u64>) -> BTreeMap<String, u64> {
    counts
        .iter()
        .map(|(class, count)| (class.name().to_owned(), *count))
        .collect()
}
