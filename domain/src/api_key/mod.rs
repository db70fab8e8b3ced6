//! The ApiKey aggregate: a credential for programs, bound to one project (or to none, for admin
//! keys) with a set of scopes, optional IP allowlist, rate-limit settings and expiry. Its life:
//! created, updated (scopes only narrowed unless an admin asks), rotated (a successor is issued
//! and this key keeps working for a grace period), revoked, and expired (recorded once its
//! expiry has passed). `state` owns what a key is now (folded from its events), `token` the
//! key's textual format, `settings` its parsed settings, `events` what is stored.

mod events;
mod settings;
mod state;
mod token;

#[cfg(test)]
mod tests;

pub use events::ApiKeyEvent;
pub use settings::{
    canonical_net, parse_description, IpAllowlist, KeyName, LimitChange, RateLimit, RateLimitChange,
};
pub use state::ApiKeyState;
pub use token::{ApiKeyToken, TokenError, TOKEN_LEN};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::{KeyId, ProjectId, Scope, Scopes};

/// Everything a new key is created with.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub name: KeyName,
    pub description: Option<String>,
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
    /// Hex HMAC-SHA256 of the full key under the server's pepper.
    pub key_hash: String,
    /// The first characters of the key, safe to show (`hrld_live_abcd`).
    pub start: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub ip_allowlist: IpAllowlist,
    pub rate_limit: RateLimit,
    pub rotated_from: Option<KeyId>,
    /// The first key of the rotations that led to this one, when it replaced another.
    pub rotation_root: Option<KeyId>,
}

/// A settings change; `None` leaves a setting as it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyUpdate {
    pub name: Option<KeyName>,
    pub description: Option<Option<String>>,
    pub scopes: Option<Scopes>,
    pub ip_allowlist: Option<IpAllowlist>,
    pub rate_limit: Option<RateLimitChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create(Box<NewApiKey>, DateTime<Utc>),
    Update {
        update: KeyUpdate,
        /// Admins may widen a key's scopes and set its rate limits; everyone else may only
        /// narrow its scopes.
        by_admin: bool,
        now: DateTime<Utc>,
    },
    /// Records that `successor` replaces this key, which stays valid until `grace_until` (or
    /// its own expiry, if sooner).
    Rotate {
        successor: KeyId,
        grace_until: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    Revoke {
        now: DateTime<Utc>,
    },
    /// Issued by the expiry sweeper: records a passed expiry, once (otherwise a no-op).
    Expire {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key not found")]
    NotFound,
    #[error("API key already exists")]
    AlreadyExists,
    #[error("the API key is revoked")]
    Revoked,
    #[error("the API key has already been rotated; rotate its successor instead")]
    AlreadyRotated,
    #[error("the API key has expired; create a new one")]
    Expired,
    #[error("scopes can only be narrowed")]
    ScopeEscalation,
    #[error("only an admin sets a key's rate limits")]
    LimitsAdminOnly,
    #[error("the `admin` scope is for keys bound to no project")]
    AdminScopeOnProjectKey,
}

impl ApiKeyError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiKeyError::NotFound => "API_KEY_NOT_FOUND",
            ApiKeyError::AlreadyExists => "API_KEY_ALREADY_EXISTS",
            ApiKeyError::Revoked => "API_KEY_REVOKED",
            ApiKeyError::AlreadyRotated => "API_KEY_ALREADY_ROTATED",
            ApiKeyError::Expired => "API_KEY_EXPIRED",
            ApiKeyError::ScopeEscalation => "SCOPE_ESCALATION",
            ApiKeyError::LimitsAdminOnly => "RATE_LIMIT_ADMIN_ONLY",
            ApiKeyError::AdminScopeOnProjectKey => "VALIDATION_FAILED",
        }
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
        let key = match (&self.state, command) {
            (Some(_), ApiKeyCommand::Create(..)) => return Err(ApiKeyError::AlreadyExists),
            (None, ApiKeyCommand::Create(new, at)) => {
                if new.project_id.is_some() && new.scopes.allows(Scope::Admin) {
                    return Err(ApiKeyError::AdminScopeOnProjectKey);
                }
                return Ok(vec![created(*new, at)]);
            }
            (None, _) => return Err(ApiKeyError::NotFound),
            (Some(key), command) => {
                if key.revoked_at.is_some() {
                    return Err(ApiKeyError::Revoked);
                }
                (key, command)
            }
        };
        match key {
            (
                key,
                ApiKeyCommand::Update {
                    update,
                    by_admin,
                    now,
                },
            ) => {
                if let Some(scopes) = &update.scopes {
                    if !by_admin && !scopes.within(&key.scopes) {
                        return Err(ApiKeyError::ScopeEscalation);
                    }
                    if key.project_id.is_some() && scopes.allows(Scope::Admin) {
                        return Err(ApiKeyError::AdminScopeOnProjectKey);
                    }
                }
                if update.rate_limit.is_some() && !by_admin {
                    return Err(ApiKeyError::LimitsAdminOnly);
                }
                // Only what differs from the key is recorded; a change of nothing is no event.
                fn changed<T: PartialEq>(new: Option<T>, now: &T) -> Option<T> {
                    new.filter(|new| new != now)
                }
                let rate_limit = update.rate_limit.map(|change| change.apply(key.rate_limit));
                let event = ApiKeyEvent::Updated {
                    name: changed(update.name, &key.name),
                    description: changed(update.description, &key.description),
                    scopes: changed(update.scopes, &key.scopes),
                    ip_allowlist: update
                        .ip_allowlist
                        .filter(|new| !new.same_networks(&key.ip_allowlist)),
                    rate_limit: changed(rate_limit, &key.rate_limit),
                    at: now,
                };
                Ok(match event {
                    ApiKeyEvent::Updated {
                        name: None,
                        description: None,
                        scopes: None,
                        ip_allowlist: None,
                        rate_limit: None,
                        ..
                    } => vec![],
                    event => vec![event],
                })
            }
            (
                key,
                ApiKeyCommand::Rotate {
                    successor,
                    grace_until,
                    now,
                },
            ) => {
                if key.successor_id.is_some() {
                    return Err(ApiKeyError::AlreadyRotated);
                }
                if key.expires_at.is_some_and(|at| at <= now) {
                    return Err(ApiKeyError::Expired);
                }
                let expires_at = key
                    .expires_at
                    .map_or(grace_until, |own| own.min(grace_until));
                Ok(vec![ApiKeyEvent::Rotated {
                    successor_id: successor,
                    expires_at,
                    at: now,
                }])
            }
            (_, ApiKeyCommand::Revoke { now }) => Ok(vec![ApiKeyEvent::Revoked { at: now }]),
            (key, ApiKeyCommand::Expire { now }) => match key.expires_at {
                Some(expires_at) if expires_at <= now && key.expired_at.is_none() => {
                    Ok(vec![ApiKeyEvent::Expired {
                        expires_at,
                        at: now,
                    }])
                }
                _ => Ok(vec![]),
            },
            (_, ApiKeyCommand::Create(..)) => Err(ApiKeyError::AlreadyExists),
        }
    }
}

fn created(new: NewApiKey, at: DateTime<Utc>) -> ApiKeyEvent {
    ApiKeyEvent::Created {
        name: new.name,
        description: new.description,
        project_id: new.project_id,
        scopes: new.scopes,
        key_hash: new.key_hash,
        start: new.start,
        expires_at: new.expires_at,
        ip_allowlist: new.ip_allowlist,
        rate_limit: new.rate_limit,
        rotated_from: new.rotated_from,
        rotation_root: new.rotation_root,
        at,
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
        self.state = ApiKeyState::fold(self.state.take(), &event);
    }
}
