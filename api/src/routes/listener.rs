//! Who listens to an event stream: the credentials it was opened with, checked again before
//! each read of the log and, while events already read are being sent, at least once a second
//! (`due`), so that a key revoked or expired, a session ended, or a scope or role taken away
//! while a stream is open ends the stream (or narrows what it sends) instead of sending on what
//! the caller may no longer see. Both checks are the cached ones every request makes, and count
//! nothing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use herald_domain::{ProjectId, Scope};

use crate::auth::{Caller, Credentials, Presented};
use crate::http::request_context::current_client_ip;
use crate::state::AppState;

pub struct Listener {
    secret: Secret,
    /// The client address the stream was opened from (a key's IP allowlist applies to it).
    client: Option<IpAddr>,
    /// When the credentials were last checked.
    checked: Instant,
}

/// How long events already read may be sent without checking the credentials again.
const RECHECK: Duration = Duration::from_secs(1);

enum Secret {
    Key(String),
    /// A session's access token or cookie (a stream is a GET: no CSRF token to check).
    Session(String),
}

impl Listener {
    /// The listener of the request being handled.
    pub fn of(credentials: &Credentials) -> Self {
        let secret = match credentials.presented() {
            Presented::Key(key) => Secret::Key(key.to_owned()),
            Presented::Token(token) | Presented::Cookie(token) => Secret::Session(token.to_owned()),
        };
        Self {
            secret,
            client: current_client_ip(),
            checked: Instant::now(),
        }
    }

    /// Whether the credentials are to be checked again before more is sent.
    pub fn due(&self) -> bool {
        self.checked.elapsed() >= RECHECK
    }

    /// Who the credentials name now; `None` when they no longer admit anyone.
    pub async fn caller(&mut self, state: &AppState) -> Option<Caller> {
        self.checked = Instant::now();
        match &self.secret {
            Secret::Key(key) => state.verifier.verify(key, self.client).await.ok(),
            Secret::Session(token) => state.users_directory.verify(token).await,
        }
    }

    /// Whether the credentials still read `project`'s jobs.
    pub async fn reads_jobs_of(&mut self, state: &AppState, project: ProjectId) -> bool {
        self.caller(state).await.is_some_and(|caller| {
            caller.can_see(project)
                && caller
                    .scopes_in(Some(project))
                    .is_some_and(|scopes| scopes.allows(Scope::JobsRead))
        })
    }
}
