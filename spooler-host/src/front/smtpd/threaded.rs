//! Sessions on a thread of their own, over a blocking connection: the encrypted ones
//! (rustls' blocking stream; a session moves here from the event loop at STARTTLS, or
//! starts here on an `implicit_tls` listener) and `sendmail -bs` over the host's socket.
//! A read waits at most until the session's deadline, and at most the command timeout; a
//! write at most the command timeout. A delayed answer is a sleep of this thread.

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;

use super::session::{Session, Step};
use super::tls::Stream;

/// How a TCP session moves onto its thread.
pub enum Start {
    /// Encrypted from the first byte (`implicit_tls`): TLS, then the greeting.
    ImplicitTls,
    /// After STARTTLS: the replies so far (the last is `220 Ready to start TLS`) in clear
    /// text, then TLS.
    StartTls,
}

/// Serves `session` over `socket` from `start` until the client quits, goes away or times
/// out.
pub fn serve_tcp(socket: TcpStream, mut session: Session, tls: &Arc<ServerConfig>, start: Start) {
    let timeout = Some(session.shared().config.command_timeout);
    let blocking = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(timeout))
        .and_then(|()| socket.set_write_timeout(timeout));
    let mut stream = Stream::Plain(socket);
    let encrypted = blocking.and_then(|()| switch_to_tls(&mut session, &mut stream, tls));
    if let Err(error) = encrypted {
        return log::warn!("listener: {}: {error}", session.peer());
    }
    if matches!(start, Start::ImplicitTls) {
        session.greet();
    }
    serve(session, stream);
}

/// Serves `session` over `stream` until the client quits, goes away or times out.
pub fn serve(mut session: Session, mut stream: Stream) {
    if let Err(error) = converse(&mut session, &mut stream) {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                session.timed_out();
                send(&mut session, &mut stream).ok();
            }
            _ => session.client_left(Some(&error)),
        }
    }
}

fn converse(session: &mut Session, stream: &mut Stream) -> io::Result<()> {
    loop {
        match session.advance() {
            Step::NeedInput => {
                send(session, stream)?;
                let left = session.deadline().saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                stream.set_read_timeout(left.min(session.shared().config.command_timeout))?;
                if session.input.read_from(stream)? == 0 {
                    session.client_left(None);
                    return Ok(());
                }
            }
            Step::Submit(submit) => {
                let answer = session.shared().intake.submit(
                    &submit.submission,
                    submit.content,
                    submit.properties,
                );
                session.submitted(answer);
            }
            Step::Flush => send(session, stream)?,
            Step::Pause(until) => {
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            Step::StartTls => {
                let tls = session.shared().tls.clone().ok_or_else(not_plain)?;
                switch_to_tls(session, stream, &tls)?;
            }
            Step::Close => return send(session, stream),
        }
    }
}

/// Sends the session's replies in clear text (the last is `220 Ready to start TLS` after
/// STARTTLS), then puts the connection under TLS, and the session starts over.
fn switch_to_tls(
    session: &mut Session,
    stream: &mut Stream,
    tls: &Arc<ServerConfig>,
) -> io::Result<()> {
    send(session, stream)?;
    let plain = std::mem::replace(stream, Stream::Switching);
    let socket = plain.into_plain().ok_or_else(not_plain)?;
    *stream = Stream::encrypt(socket, tls)?;
    session.tls_started();
    Ok(())
}

/// Sends the session's replies.
fn send(session: &mut Session, stream: &mut Stream) -> io::Result<()> {
    if session.replies.is_empty() {
        return Ok(());
    }
    stream.write_all(&session.replies)?;
    stream.flush()?;
    session.replies.clear();
    Ok(())
}

fn not_plain() -> io::Error {
    io::Error::other("STARTTLS on a connection that is not in clear text")
}
