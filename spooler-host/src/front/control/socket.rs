//! The sockets clients connect to, and who may ask what on each.
//!
//! The control socket (`control.sock` in the data folder) is the host's user's: the folder
//! is mode 0700, the socket 0600, and each connection's peer credentials are checked as
//! well (root is let in too). The public submission socket (`submission.public_socket`,
//! off unless configured) is what `sendmail` of every other user on the machine reaches,
//! as Postfix's `postdrop` is: mode 0666 in a folder anyone may enter, and it takes only what
//! any user may do with sendmail: submit (also as an SMTP session, `-bs`), list the queue
//! (`mailq`), flush it (`-q`) and verify addresses (`-bv`). The peer's user id goes into the log with each submission.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::front::control::{send, Control};
use crate::protocol::{Failure, Request, Response};

/// What a socket lets its clients ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything: the host's user (and root) only.
    Owner,
    /// What any user may do with sendmail, for any user.
    Public,
}

/// The process at the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    uid: Option<u32>,
    access: Access,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "a client of uid {uid}"),
            None => write!(f, "a client of unknown uid"),
        }
    }
}

impl Peer {
    /// Whether this peer may make `request`; the refusal says what it may do instead.
    pub fn may_ask(&self, request: &Request) -> Result<(), String> {
        let public = matches!(
            request,
            Request::Submit(_)
                | Request::Queue { .. }
                | Request::Shape { .. }
                | Request::Flush { transport: None }
                | Request::Verify { .. }
                | Request::Smtp
        );
        if self.access == Access::Owner || public {
            Ok(())
        } else {
            Err(format!(
                "permission denied: {self} may submit, list the queue, flush it and verify \
                 addresses here; the rest is for the spooler's user"
            ))
        }
    }
}

/// Who is at the other end of `stream`, if it may use a socket of `access` at all.
pub fn peer(stream: &UnixStream, access: Access) -> Result<Peer, String> {
    let uid = peer_uid(stream);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let owner = unsafe { libc::geteuid() };
    let peer = Peer { uid, access };
    match (access, uid) {
        (Access::Public, _) => Ok(peer),
        (Access::Owner, Some(uid)) if uid == owner || uid == 0 => Ok(peer),
        (Access::Owner, _) => {
            log::warn!("control: refused {peer}; only uid {owner} may use this socket");
            Err(format!(
                "permission denied: this spooler belongs to uid {owner}; other users submit \
                 through its public submission socket (submission.public_socket)"
            ))
        }
    }
}

/// Binds a socket at `path` with file mode `mode`, refusing if a host already answers
/// there.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another spooler-host is already running with the socket {}",
            path.display()
        ));
    }
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot create the socket {}: {e}", path.display()))?;
    set_mode(path, mode)?;
    Ok(listener)
}

/// Makes `folder` (the data folder) private to the host's user.
pub fn make_private_folder(folder: &Path) -> Result<(), String> {
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create the data folder {}: {e}", folder.display()))?;
    set_mode(folder, 0o700)
}

/// Binds the public submission socket: its folder is created for anyone to enter (0755),
/// the socket for anyone to connect to (0666).
pub fn bind_public(path: &Path) -> Result<UnixListener, String> {
    if let Some(folder) = path.parent() {
        if !folder.exists() {
            std::fs::create_dir_all(folder).map_err(|e| {
                format!(
                    "cannot create the folder of the public socket {}: {e}",
                    folder.display()
                )
            })?;
            set_mode(folder, 0o755)?;
        }
    }
    bind(path, 0o666)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the permissions of {}: {e}", path.display()))
}

/// Serves connections on `listener` until the process ends, each on a thread of its own.
pub fn serve(listener: UnixListener, control: Control, socket: PathBuf, access: Access) {
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let control = control.clone();
                        let spawned = std::thread::Builder::new()
                            .name("control client".into())
                            .spawn(move || control.converse(stream, access));
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

/// Answers every client that connects to `listeners` during `wait` with a temporary failure
/// saying `why`: for the time the host waits for its store at start. A client (cron's
/// `sendmail`) hears to try again later (EX_TEMPFAIL, 75) at once, instead of waiting for
/// an answer or being told that no spooler runs.
pub fn turn_away(listeners: &[&UnixListener], wait: Duration, why: &str) {
    /// How long the loop sleeps when no client is waiting.
    const IDLE: Duration = Duration::from_millis(50);
    /// How much of a request is read (its first line) before the answer.
    const REQUEST_LINE: u64 = 64 * 1024;
    for listener in listeners {
        listener.set_nonblocking(true).ok();
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let mut answered = false;
        for listener in listeners {
            let Ok((mut stream, _)) = listener.accept() else {
                continue;
            };
            answered = true;
            stream.set_nonblocking(false).ok();
            stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
            stream.set_write_timeout(Some(Duration::from_secs(1))).ok();
            // The request line is read first, so that a client writing it is not cut off
            // before it reads the answer.
            let mut line = String::new();
            BufReader::new((&stream).take(REQUEST_LINE))
                .read_line(&mut line)
                .ok();
            send(
                &mut stream,
                &Response::error(Failure::Temporary, why.to_owned()),
            );
        }
        if !answered {
            std::thread::sleep(IDLE);
        }
    }
    for listener in listeners {
        listener.set_nonblocking(false).ok();
    }
}

/// The user id of the process at the other end of `stream`.
#[cfg(target_os = "linux")]
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::unix::io::AsRawFd;
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe a valid `ucred` for SO_PEERCRED.
    let done = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut length,
        )
    };
    (done == 0).then_some(credentials.uid)
}

#[cfg(not(target_os = "linux"))]
fn peer_uid(_stream: &UnixStream) -> Option<u32> {
    // SAFETY: geteuid cannot fail; elsewhere the socket's file mode is the only guard.
    Some(unsafe { libc::geteuid() })
}
