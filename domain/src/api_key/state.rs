//! What an API key is now, folded from its events: its settings, where it came from (the key it
//! replaced by rotation, and the first key of those rotations, whose rate-limit budgets it
//! spends), and its life (successor, revocation, expiry).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiKeyEvent, IpAllowlist, KeyName, RateLimit};
use crate::{KeyId, ProjectId, Scopes};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyState {
    pub name: KeyName,
    pub description: Option<String>,
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
    pub key_hash: String,
    pub start: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub ip_allowlist: IpAllowlist,
    pub rate_limit: RateLimit,
    pub rotated_from: Option<KeyId>,
    /// The first key of the rotations that led to this one (keys rotated before this was
    /// recorded have none: `rotated_from` stands in).
    #[serde(default)]
    pub rotation_root: Option<KeyId>,
    pub successor_id: Option<KeyId>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When `api_key.expired` was recorded.
    #[serde(default)]
    pub expired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ApiKeyState {
    /// Whether the key may authenticate a request at `now` (refused from its expiry instant).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// The key whose rate-limit budgets the key `id` (this one) spends: the first of the
    /// rotations that led to it, so a rotation never starts fresh budgets.
    pub fn budget_key<'a>(&'a self, id: &'a KeyId) -> &'a KeyId {
        self.rotation_root
            .as_ref()
            .or(self.rotated_from.as_ref())
            .unwrap_or(id)
    }

    /// `active`, `revoked` or `expired` at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        match (self.revoked_at, self.is_active(now)) {
            (Some(_), _) => "revoked",
            (None, true) => "active",
            (None, false) => "expired",
        }
    }

    /// Folds one event into the state (`None` before `api_key.created`).
    pub fn fold(state: Option<ApiKeyState>, event: &ApiKeyEvent) -> Option<ApiKeyState> {
        if let ApiKeyEvent::Created {
            name,
            description,
            project_id,
            scopes,
            key_hash,
            start,
            expires_at,
            ip_allowlist,
            rate_limit,
            rotated_from,
            rotation_root,
            at,
        } = event
        {
            return Some(ApiKeyState {
                name: name.clone(),
                description: description.clone(),
                project_id: *project_id,
                scopes: scopes.clone(),
                key_hash: key_hash.clone(),
                start: start.clone(),
                expires_at: *expires_at,
                ip_allowlist: ip_allowlist.clone(),
                rate_limit: *rate_limit,
                rotated_from: rotated_from.clone(),
                rotation_root: rotation_root.clone(),
                successor_id: None,
                revoked_at: None,
                expired_at: None,
                created_at: *at,
                updated_at: *at,
            });
        }
        let mut key = state?;
        match event {
            ApiKeyEvent::Created { .. } => {}
            ApiKeyEvent::Updated {
                name,
                description,
                scopes,
                ip_allowlist,
                rate_limit,
                at,
            } => {
                if let Some(name) = name {
                    key.name = name.clone();
                }
                if let Some(description) = description {
                    key.description = description.clone();
                }
                if let Some(scopes) = scopes {
                    key.scopes = scopes.clone();
                }
                if let Some(list) = ip_allowlist {
                    key.ip_allowlist = list.clone();
                }
                if let Some(limit) = rate_limit {
                    key.rate_limit = *limit;
                }
                key.updated_at = *at;
            }
            ApiKeyEvent::Rotated {
                successor_id,
                expires_at,
                at,
            } => {
                key.successor_id = Some(successor_id.clone());
                key.expires_at = Some(*expires_at);
                key.updated_at = *at;
            }
            ApiKeyEvent::Revoked { at } => {
                key.revoked_at = Some(*at);
                key.updated_at = *at;
            }
            ApiKeyEvent::Expired { at, .. } => {
                key.expired_at = Some(*at);
                key.updated_at = *at;
            }
        }
        Some(key)
    }
}
