//! Who may do what in a session: STARTTLS, AUTH PLAIN and LOGIN (offered only over TLS or
//! from loopback), and the relay rule (the allowed networks, or an authenticated user).

use std::io::{self, BufReader};

use super::{is_loopback, Next, Session};
use crate::clients::listener::auth;
use crate::clients::listener::tls::Stream;

impl Session<'_> {
    pub(super) fn start_tls(&mut self) -> io::Result<Next> {
        let Some(tls) = self.shared.tls.clone() else {
            self.error(502, "5.5.1", "STARTTLS is not offered here");
            return Ok(Next::Continue);
        };
        if self.stream().is_tls() {
            self.error(503, "5.5.1", "TLS is already active");
            return Ok(Next::Continue);
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        self.flush()?;
        // Whatever the client sent after STARTTLS in clear text is dropped (it could have
        // been injected by someone in between): the buffer goes with the reader.
        let reader = std::mem::replace(&mut self.reader, BufReader::new(Stream::Switching));
        let socket = reader
            .into_inner()
            .into_plain()
            .ok_or_else(|| io::Error::other("STARTTLS over TLS"))?;
        self.reader = BufReader::with_capacity(16 * 1024, Stream::encrypt(socket, &tls)?);
        self.greeted = None;
        self.user = None;
        self.transaction = None;
        Ok(Next::Continue)
    }

    pub(super) fn authenticate(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
    ) -> io::Result<()> {
        if self.shared.users.is_none() {
            self.error(502, "5.5.1", "AUTH is not offered here");
            return Ok(());
        }
        if !self.auth_offered() {
            self.error(
                538,
                "5.7.11",
                "encryption required: use STARTTLS before AUTH",
            );
            return Ok(());
        }
        if self.user.is_some() {
            self.error(503, "5.5.1", "already authenticated");
            return Ok(());
        }
        if self.transaction.is_some() {
            self.error(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            );
            return Ok(());
        }
        let credentials = match mechanism {
            "PLAIN" => {
                let Some(response) = self.sasl_response(initial, "")? else {
                    return Ok(());
                };
                auth::plain(&response)
            }
            "LOGIN" => {
                let Some(user) = self.sasl_response(initial, "Username:")? else {
                    return Ok(());
                };
                let Some(password) = self.sasl_response(None, "Password:")? else {
                    return Ok(());
                };
                Some((
                    String::from_utf8_lossy(&user).into_owned(),
                    String::from_utf8_lossy(&password).into_owned(),
                ))
            }
            _ => {
                self.error(
                    504,
                    "5.5.4",
                    "unrecognized authentication type (use PLAIN or LOGIN)",
                );
                return Ok(());
            }
        };
        let users = self.shared.users.as_ref().expect("checked above");
        match credentials {
            Some((user, password)) if users.check(&user, &password) => {
                log::info!("listener: {}: authenticated as {user}", self.peer);
                self.user = Some(user);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            Some((user, _)) => {
                log::warn!("listener: {}: authentication failed for {user}", self.peer);
                self.error(535, "5.7.8", "authentication credentials invalid");
            }
            None => self.error(501, "5.5.2", "malformed authentication response"),
        }
        Ok(())
    }

    /// The decoded SASL response: the initial one, or the answer to a `334` challenge;
    /// `None` when the client cancelled or sent no base64 (answered already).
    pub(super) fn sasl_response(
        &mut self,
        initial: Option<String>,
        challenge: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let text = match initial {
            Some(text) => text,
            None => {
                let challenge = auth::encode(challenge.as_bytes());
                self.reply_text(334, &challenge);
                match self.command_line()? {
                    Some(Some(line)) => line,
                    Some(None) => {
                        self.error(500, "5.5.2", "line too long");
                        return Ok(None);
                    }
                    None => return Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        if text.trim() == "*" {
            self.error(501, "5.0.0", "authentication cancelled");
            return Ok(None);
        }
        match auth::decode(&text) {
            Some(bytes) => Ok(Some(bytes)),
            None => {
                self.error(501, "5.5.2", "the response is not base64");
                Ok(None)
            }
        }
    }

    pub(super) fn auth_offered(&self) -> bool {
        self.shared.users.is_some() && (self.stream().is_tls() || is_loopback(self.peer))
    }

    pub(super) fn may_send(&self) -> bool {
        self.user.is_some()
            || self
                .shared
                .config
                .allowed_networks
                .iter()
                .any(|network| network.contains(self.peer))
    }

    pub(super) fn refuse_relay(&mut self) {
        log::warn!(
            "listener: {}: refused mail from outside the allowed networks without AUTH",
            self.peer
        );
        if self.shared.users.is_some() {
            self.error(530, "5.7.0", "authentication required");
        } else {
            let text = format!(
                "relay access denied: {} is not in the listener's allowed networks",
                self.peer
            );
            self.error(554, "5.7.1", &text);
        }
    }
}
