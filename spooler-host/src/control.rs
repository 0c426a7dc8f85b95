//! The control socket: a Unix socket in the data folder that only the host's user can open
//! (the folder is mode 0700, the socket 0600). Each connection gets a thread; requests and
//! answers follow [`crate::protocol`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use provider_abi::store::OUTBOX;
use provider_abi::MessageId;

use crate::engine::Command;
use crate::protocol::{FolderView, MessageView, Request, Response, StatusView};
use crate::registry::Registry;
use crate::status::StatusTable;
use crate::store_thread::{Commit, StoreClient};
use crate::submission;

/// The largest message the socket accepts.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// What the control threads need.
#[derive(Clone)]
pub struct Control {
    /// The store thread.
    pub store: StoreClient,
    /// The routing table (to know whether a submission needs preprocessing).
    pub registry: Arc<Registry>,
    /// The status table.
    pub status: StatusTable,
    /// The queue manager.
    pub engine: Sender<Command>,
}

/// Binds the control socket at `path`, refusing if a host already answers there.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another spooler-host is already running with the control socket {}",
            path.display()
        ));
    }
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot create the control socket {}: {e}", path.display()))?;
    set_mode(path, 0o600)?;
    Ok(listener)
}

/// Makes `folder` (the data folder) private to the host's user.
pub fn make_private_folder(folder: &Path) -> Result<(), String> {
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create the data folder {}: {e}", folder.display()))?;
    set_mode(folder, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the permissions of {}: {e}", path.display()))
}

/// Serves connections until the process ends.
pub fn serve(listener: UnixListener, control: Control, socket: PathBuf) {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let control = control.clone();
                        let spawned = std::thread::Builder::new()
                            .name("control client".into())
                            .spawn(move || control.converse(stream));
                        if let Err(error) = spawned {
                            log::error!("control: cannot start a thread for a client: {error}");
                        }
                    }
                    Err(error) => log::warn!("control {}: {error}", socket.display()),
                }
            }
        })
        .expect("the system can start a thread");
}

impl Control {
    fn converse(&self, stream: UnixStream) {
        let mut writer = match stream.try_clone() {
            Ok(writer) => writer,
            Err(error) => {
                log::warn!("control: {error}");
                return;
            }
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(error) => {
                    log::debug!("control: a client went away: {error}");
                    return;
                }
            }
            let response = match serde_json::from_str::<Request>(line.trim_end()) {
                Ok(request) => self.answer(request, &mut reader),
                Err(error) => Response::Error {
                    message: format!("not a request this host understands: {error}"),
                },
            };
            let mut text = serde_json::to_string(&response).expect("responses serialize");
            text.push('\n');
            if writer.write_all(text.as_bytes()).is_err() {
                return;
            }
        }
    }

    fn answer(&self, request: Request, reader: &mut impl Read) -> Response {
        let result = match request {
            Request::Submit(submission) => self.submit(&submission, reader),
            Request::Show { id, content } => self.show(&id, content),
            Request::List { folder } => self.list(&folder),
            Request::Queue => self.list(OUTBOX),
            Request::Folders => self
                .store
                .folders()
                .map(|folders| Response::Folders {
                    folders: folders.iter().map(FolderView::from).collect(),
                })
                .map_err(|e| e.to_string()),
            Request::Flush { transport } => {
                if let Some(name) = &transport {
                    if !self.registry.transports.iter().any(|t| &t.name == name) {
                        return Response::Error {
                            message: format!("there is no transport named `{name}`"),
                        };
                    }
                }
                self.engine
                    .send(Command::Flush(transport))
                    .map(|()| Response::Done)
                    .map_err(|_| "the host is shutting down".into())
            }
            Request::Status => Ok(Response::Status {
                providers: self.status.rows().iter().map(StatusView::from).collect(),
            }),
        };
        result.unwrap_or_else(|message| Response::Error { message })
    }

    fn submit(
        &self,
        submission: &crate::protocol::Submission,
        reader: &mut impl Read,
    ) -> Result<Response, String> {
        if submission.content_length > MAX_MESSAGE_SIZE {
            return Err(format!(
                "the message is {} bytes; the limit is {MAX_MESSAGE_SIZE}",
                submission.content_length
            ));
        }
        let mut content = vec![0; submission.content_length];
        reader
            .read_exact(&mut content)
            .map_err(|e| format!("the message content ended early: {e}"))?;
        let (mut envelope, content) = submission::envelope_and_content(submission, content)?;
        envelope.preprocessed = self
            .registry
            .preprocessors_for(&envelope.recipients)
            .is_empty();
        let receipt = self
            .store
            .commit(Commit {
                submit: vec![(envelope, content)],
                ..Commit::default()
            })
            .map_err(|e| format!("the store could not take the message: {e}"))?;
        let id = receipt
            .submitted
            .first()
            .copied()
            .ok_or("the store assigned no id")?;
        self.engine.send(Command::Wake).ok();
        log::info!("{id}: submitted by a client");
        Ok(Response::Submitted { id: id.to_string() })
    }

    fn show(&self, id: &str, content: bool) -> Result<Response, String> {
        let id: MessageId = id
            .parse()
            .map_err(|_| format!("`{id}` is not a message id (16 hex digits)"))?;
        match self.store.get(id).map_err(|e| e.to_string())? {
            Some(message) => Ok(Response::Message(MessageView::of_message(
                &message, content,
            ))),
            None => Err(format!("there is no message {id}")),
        }
    }

    fn list(&self, folder: &str) -> Result<Response, String> {
        let messages = self.store.list(folder).map_err(|e| e.to_string())?;
        Ok(Response::Messages {
            messages: messages.iter().map(MessageView::of_summary).collect(),
        })
    }
}
