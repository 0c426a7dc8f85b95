//! Who may do what in a session: STARTTLS, AUTH PLAIN and LOGIN (offered only over TLS or
//! from loopback; answered late to a client that failed before, and not at all to a banned
//! one), and the relay rule (the allowed networks, or an authenticated user).

use super::{is_loopback, Session, SessionMode, Step};
use crate::front::smtpd::auth;

/// What the answer to a `334` challenge is.
pub(super) enum Sasl {
    /// AUTH PLAIN's response.
    Plain,
    /// AUTH LOGIN's user name.
    LoginUser,
    /// AUTH LOGIN's password, for this user name.
    LoginPassword(Vec<u8>),
}

impl Session {
    pub(super) fn start_tls(&mut self) -> Option<Step> {
        if self.shared.tls.is_none() {
            self.error(502, "5.5.1", "STARTTLS is not offered here");
            return None;
        }
        if self.tls {
            self.error(503, "5.5.1", "TLS is already active");
            return None;
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        Some(Step::StartTls)
    }

    /// The connection is encrypted now: the session starts over (RFC 3207), and whatever
    /// the client sent after STARTTLS in clear text is dropped (it could have been injected
    /// by someone in between).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.input.clear();
        self.greeted = None;
        self.user = None;
        self.transaction = None;
    }

    pub(super) fn authenticate(&mut self, mechanism: &str, initial: Option<String>) {
        if self.shared.users.is_none() {
            return self.error(502, "5.5.1", "AUTH is not offered here");
        }
        if !self.auth_offered() {
            return self.error(
                538,
                "5.7.11",
                "encryption required: use STARTTLS before AUTH",
            );
        }
        if self.user.is_some() {
            return self.error(503, "5.5.1", "already authenticated");
        }
        let limits = &self.shared.config.clients;
        if let Some(clients) = &self.shared.clients {
            if clients.is_banned(self.peer, limits) {
                self.reply(
                    421,
                    "4.7.0",
                    "your address is banned after failed authentications, try again later",
                );
                self.mode = SessionMode::Closed;
                return;
            }
        }
        if self.transaction.is_some() {
            return self.error(
                503,
                "5.5.1",
                "AUTH is not allowed during a mail transaction",
            );
        }
        let (stage, prompt) = match mechanism {
            "PLAIN" => (Sasl::Plain, ""),
            "LOGIN" => (Sasl::LoginUser, "Username:"),
            _ => {
                return self.error(
                    504,
                    "5.5.4",
                    "unrecognized authentication type (use PLAIN or LOGIN)",
                )
            }
        };
        match initial {
            Some(response) => self.sasl_answer(stage, &response),
            None => self.challenge(stage, prompt),
        }
    }

    /// Asks for the next SASL response with a `334` carrying `prompt`.
    fn challenge(&mut self, stage: Sasl, prompt: &str) {
        let challenge = auth::encode(prompt.as_bytes());
        self.reply_text(334, &challenge);
        self.mode = SessionMode::Sasl(stage);
    }

    /// Takes the client's SASL response `text` (base64, or `*` to cancel) for `stage`.
    pub(super) fn sasl_answer(&mut self, stage: Sasl, text: &str) {
        if text.trim() == "*" {
            return self.error(501, "5.0.0", "authentication cancelled");
        }
        let Some(response) = auth::decode(text) else {
            return self.error(501, "5.5.2", "the response is not base64");
        };
        let credentials = match stage {
            Sasl::Plain => auth::plain(&response),
            Sasl::LoginUser => return self.challenge(Sasl::LoginPassword(response), "Password:"),
            Sasl::LoginPassword(user) => Some((
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&response).into_owned(),
            )),
        };
        let Some((user, password)) = credentials else {
            return self.error(501, "5.5.2", "malformed authentication response");
        };
        let users = &self.shared.users;
        let succeeded = users.as_ref().is_some_and(|u| u.check(&user, &password));
        let banned_for = self.shared.clients.clone().and_then(|clients| {
            let limits = &self.shared.config.clients;
            let verdict = clients.auth_answer(self.peer, limits, &user, succeeded);
            if verdict.answer_at > std::time::Instant::now() {
                self.pause = Some(verdict.answer_at);
            }
            verdict.banned_for
        });
        if succeeded {
            log::info!("listener: {}: authenticated as {user}", self.peer);
            self.user = Some(user);
            return self.reply(235, "2.7.0", "Authentication successful");
        }
        log::warn!("listener: {}: authentication failed for {user}", self.peer);
        self.error(535, "5.7.8", "authentication credentials invalid");
        if let Some(time) = banned_for {
            let text = format!(
                "too many failed authentications: your address is banned for {time:?}, \
                 closing the connection"
            );
            self.reply(421, "4.7.0", &text);
            self.mode = SessionMode::Closed;
        }
    }

    pub(super) fn auth_offered(&self) -> bool {
        self.shared.users.is_some() && (self.tls || is_loopback(self.peer))
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
