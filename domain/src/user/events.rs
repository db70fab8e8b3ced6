//! What happens to a user, as stored in the log. No event carries a password or its hash.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Email;
use crate::role::{AccountRole, ProjectRole};
use crate::{ProjectId, SessionId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    #[serde(rename = "user.created")]
    Created {
        email: Email,
        role: AccountRole,
        at: DateTime<Utc>,
    },
    #[serde(rename = "user.logged_in")]
    LoggedIn {
        session_id: SessionId,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "user.logged_out")]
    LoggedOut {
        session_id: SessionId,
        at: DateTime<Utc>,
    },
    /// Ends every session but `kept_session` (the one that asked for the change).
    #[serde(rename = "user.password_changed")]
    PasswordChanged {
        kept_session: Option<SessionId>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "user.project_role_granted")]
    ProjectRoleGranted {
        project_id: ProjectId,
        role: ProjectRole,
        at: DateTime<Utc>,
    },
    #[serde(rename = "user.project_role_revoked")]
    ProjectRoleRevoked {
        project_id: ProjectId,
        at: DateTime<Utc>,
    },
}

impl UserEvent {
    pub fn name(&self) -> &'static str {
        match self {
            UserEvent::Created { .. } => "user.created",
            UserEvent::LoggedIn { .. } => "user.logged_in",
            UserEvent::LoggedOut { .. } => "user.logged_out",
            UserEvent::PasswordChanged { .. } => "user.password_changed",
            UserEvent::ProjectRoleGranted { .. } => "user.project_role_granted",
            UserEvent::ProjectRoleRevoked { .. } => "user.project_role_revoked",
        }
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        self.name().into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}
