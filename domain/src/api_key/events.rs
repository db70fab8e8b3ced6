//! What happened to an API key. Stored forever: the key's HMAC and displayable start are here,
//! the key itself never is.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::settings::{IpAllowlist, KeyName, RateLimit};
use crate::{KeyId, ProjectId, Scopes};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApiKeyEvent {
    #[serde(rename = "api_key.created")]
    Created {
        name: KeyName,
        #[serde(default)]
        description: Option<String>,
        project_id: Option<ProjectId>,
        scopes: Scopes,
        key_hash: String,
        start: String,
        expires_at: Option<DateTime<Utc>>,
        #[serde(default)]
        ip_allowlist: IpAllowlist,
        #[serde(default)]
        rate_limit: RateLimit,
        /// Set when this key replaced another through rotation.
        #[serde(default)]
        rotated_from: Option<KeyId>,
        /// The first key of the rotations that led to this one (absent when it is the first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotation_root: Option<KeyId>,
        at: DateTime<Utc>,
    },
    /// Only the settings that changed are present.
    #[serde(rename = "api_key.updated")]
    Updated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<KeyName>,
        /// `null` when the description was cleared (present, unlike a description unchanged).
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        description: Option<Option<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scopes: Option<Scopes>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip_allowlist: Option<IpAllowlist>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate_limit: Option<RateLimit>,
        at: DateTime<Utc>,
    },
    /// A successor key was issued; this one keeps working until `expires_at` (the grace end).
    #[serde(rename = "api_key.rotated")]
    Rotated {
        successor_id: KeyId,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "api_key.revoked")]
    Revoked { at: DateTime<Utc> },
    /// The key's expiry (its own, or a rotation's grace end) has passed. It stopped
    /// authenticating at `expires_at`; this event records that for the log and for webhooks.
    #[serde(rename = "api_key.expired")]
    Expired {
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl ApiKeyEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ApiKeyEvent::Created { .. } => "api_key.created",
            ApiKeyEvent::Updated { .. } => "api_key.updated",
            ApiKeyEvent::Rotated { .. } => "api_key.rotated",
            ApiKeyEvent::Revoked { .. } => "api_key.revoked",
            ApiKeyEvent::Expired { .. } => "api_key.expired",
        }
    }
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// A field that is present, `null` included: `Some(None)` for `null`, where serde's default
/// reading of an `Option<Option<_>>` would take `null` for an absent field (a cleared value
/// read back as "unchanged"). An absent field is `None` through `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
