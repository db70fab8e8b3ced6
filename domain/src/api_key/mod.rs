//! The ApiKey aggregate: a credential for programs, bound to one project (or to none, for admin
//! keys) with a set of scopes. The event stores only a peppered HMAC of the key, never the key.
//! `token` owns the key's textual format.

mod token;

pub use token::{ApiKeyToken, TokenError};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::{ProjectId, Scopes};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create {
        name: String,
        project_id: Option<ProjectId>,
        scopes: Scopes,
        /// Hex HMAC-SHA256 of the full key under the server's pepper.
        key_hash: String,
        /// The first characters of the key, safe to show ("hrld_live_abcd...").
        start: String,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    },
    Revoke {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApiKeyEvent {
    #[serde(rename = "api_key.created")]
    Created {
        name: String,
        project_id: Option<ProjectId>,
        scopes: Scopes,
        key_hash: String,
        start: String,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "api_key.revoked")]
    Revoked { at: DateTime<Utc> },
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            ApiKeyEvent::Created { .. } => "api_key.created".into(),
            ApiKeyEvent::Revoked { .. } => "api_key.revoked".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key not found")]
    NotFound,
    #[error("API key already exists")]
    AlreadyExists,
    #[error("API key is already revoked")]
    AlreadyRevoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState {
    pub name: String,
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
    pub key_hash: String,
    pub start: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl ApiKeyState {
    /// Whether the key may authenticate a request at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    state: Option<ApiKeyState>,
}

impl ApiKey {
    pub fn state(&self) -> Option<&ApiKeyState> {
        self.state.as_ref()
    }

    pub fn decide(&self, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        match (command, &self.state) {
            (ApiKeyCommand::Create { .. }, Some(_)) => Err(ApiKeyError::AlreadyExists),
            (
                ApiKeyCommand::Create {
                    name,
                    project_id,
                    scopes,
                    key_hash,
                    start,
                    expires_at,
                    now,
                },
                None,
            ) => Ok(vec![ApiKeyEvent::Created {
                name,
                project_id,
                scopes,
                key_hash,
                start,
                expires_at,
                at: now,
            }]),
            (ApiKeyCommand::Revoke { .. }, None) => Err(ApiKeyError::NotFound),
            (ApiKeyCommand::Revoke { .. }, Some(key)) if key.revoked_at.is_some() => {
                Err(ApiKeyError::AlreadyRevoked)
            }
            (ApiKeyCommand::Revoke { now }, Some(_)) => Ok(vec![ApiKeyEvent::Revoked { at: now }]),
        }
    }
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "api_key";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
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
        match event {
            ApiKeyEvent::Created {
                name,
                project_id,
                scopes,
                key_hash,
                start,
                expires_at,
                at,
            } => {
                self.state = Some(ApiKeyState {
                    name,
                    project_id,
                    scopes,
                    key_hash,
                    start,
                    expires_at,
                    revoked_at: None,
                    created_at: at,
                })
            }
            ApiKeyEvent::Revoked { at } => {
                if let Some(key) = &mut self.state {
                    key.revoked_at = Some(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use cqrs_es::test::TestFramework;

    fn created(expires_at: Option<DateTime<Utc>>) -> ApiKeyEvent {
        ApiKeyEvent::Created {
            name: "ci".into(),
            project_id: None,
            scopes: Scopes::parse(["jobs:read"]).unwrap(),
            key_hash: "00".into(),
            start: "hrld_live_abcd".into(),
            expires_at,
            at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn a_key_is_revoked_once_and_then_inactive() {
        let now = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        TestFramework::<ApiKey>::with(())
            .given(vec![created(None)])
            .when(ApiKeyCommand::Revoke { now })
            .then_expect_events(vec![ApiKeyEvent::Revoked { at: now }]);
        TestFramework::<ApiKey>::with(())
            .given(vec![created(None), ApiKeyEvent::Revoked { at: now }])
            .when(ApiKeyCommand::Revoke { now })
            .then_expect_error(ApiKeyError::AlreadyRevoked);
    }

    #[test]
    fn a_key_stops_being_active_at_its_expiry_instant() {
        let expiry = Utc.timestamp_opt(1_700_000_500, 0).unwrap();
        let mut key = ApiKey::default();
        Aggregate::apply(&mut key, created(Some(expiry)));
        let state = key.state().unwrap();
        assert!(state.is_active(expiry - Duration::milliseconds(1)));
        assert!(!state.is_active(expiry));
    }
}
