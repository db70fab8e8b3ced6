//! The User aggregate: a person who logs in with an email and password. It owns the user's
//! account role, their role in each project and their sessions, so one aggregate answers
//! "may this token act, and on what": a session is valid from `user.logged_in` until its
//! expiry, `user.logged_out`, or a `user.password_changed` that did not keep it.

mod events;
mod values;

#[cfg(test)]
mod tests;

pub use events::UserEvent;
pub use values::{check_new_password, Email, PASSWORD_MAX_BYTES, PASSWORD_MIN_CHARS};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::role::{AccountRole, ProjectRole};
use crate::{ProjectId, SessionId};

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Create {
        email: Email,
        role: AccountRole,
        now: DateTime<Utc>,
    },
    StartSession {
        session_id: SessionId,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    EndSession {
        session_id: SessionId,
        now: DateTime<Utc>,
    },
    /// Records a password change (the hash is stored outside the log) and ends every other
    /// session.
    ChangePassword {
        keep_session: Option<SessionId>,
        now: DateTime<Utc>,
    },
    SetProjectRole {
        project_id: ProjectId,
        role: ProjectRole,
        now: DateTime<Utc>,
    },
    RemoveFromProject {
        project_id: ProjectId,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user already exists")]
    AlreadyExists,
    #[error("user not found")]
    NotFound,
    #[error("the user is not a member of this project")]
    NotAMember,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    pub email: Email,
    pub role: AccountRole,
    pub created_at: DateTime<Utc>,
    /// Sessions not ended, with their expiry (expired ones are pruned as later events arrive).
    pub sessions: BTreeMap<SessionId, DateTime<Utc>>,
    pub projects: BTreeMap<ProjectId, ProjectRole>,
}

impl UserState {
    pub fn session_active(&self, session: SessionId, now: DateTime<Utc>) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|expires_at| now < *expires_at)
    }

    pub fn is_admin(&self) -> bool {
        self.role == AccountRole::Admin
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::Created { .. } => {}
            UserEvent::LoggedIn {
                session_id,
                expires_at,
                at,
            } => {
                self.sessions.retain(|_, expiry| *expiry > at);
                self.sessions.insert(session_id, expires_at);
            }
            UserEvent::LoggedOut { session_id, .. } => {
                self.sessions.remove(&session_id);
            }
            UserEvent::PasswordChanged { kept_session, .. } => {
                self.sessions.retain(|id, _| Some(*id) == kept_session);
            }
            UserEvent::ProjectRoleGranted {
                project_id, role, ..
            } => {
                self.projects.insert(project_id, role);
            }
            UserEvent::ProjectRoleRevoked { project_id, .. } => {
                self.projects.remove(&project_id);
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    state: Option<UserState>,
}

impl User {
    pub fn state(&self) -> Option<&UserState> {
        self.state.as_ref()
    }

    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        let (state, command) = match (&self.state, command) {
            (None, UserCommand::Create { email, role, now }) => {
                return Ok(vec![UserEvent::Created {
                    email,
                    role,
                    at: now,
                }])
            }
            (Some(_), UserCommand::Create { .. }) => return Err(UserError::AlreadyExists),
            (None, _) => return Err(UserError::NotFound),
            (Some(state), command) => (state, command),
        };
        let events = match command {
            UserCommand::Create { .. } => unreachable!("handled above"),
            UserCommand::StartSession {
                session_id,
                expires_at,
                now,
            } => vec![UserEvent::LoggedIn {
                session_id,
                expires_at,
                at: now,
            }],
            // Ending a session that is already over changes nothing.
            UserCommand::EndSession { session_id, now } => state
                .sessions
                .contains_key(&session_id)
                .then_some(UserEvent::LoggedOut {
                    session_id,
                    at: now,
                })
                .into_iter()
                .collect(),
            UserCommand::ChangePassword { keep_session, now } => {
                vec![UserEvent::PasswordChanged {
                    kept_session: keep_session,
                    at: now,
                }]
            }
            UserCommand::SetProjectRole {
                project_id,
                role,
                now,
            } => (state.projects.get(&project_id) != Some(&role))
                .then_some(UserEvent::ProjectRoleGranted {
                    project_id,
                    role,
                    at: now,
                })
                .into_iter()
                .collect(),
            UserCommand::RemoveFromProject { project_id, now } => {
                if !state.projects.contains_key(&project_id) {
                    return Err(UserError::NotAMember);
                }
                vec![UserEvent::ProjectRoleRevoked {
                    project_id,
                    at: now,
                }]
            }
        };
        Ok(events)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "user";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match (&mut self.state, event) {
            (None, UserEvent::Created { email, role, at }) => {
                self.state = Some(UserState {
                    email,
                    role,
                    created_at: at,
                    sessions: BTreeMap::new(),
                    projects: BTreeMap::new(),
                })
            }
            (Some(state), event) => state.apply(event),
            (None, _) => {}
        }
    }
}
