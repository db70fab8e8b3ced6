//! Request and response bodies of the API-key endpoints. A key resource never carries the key
//! or its hash; the plaintext appears once, in the answer to create and rotate.

use chrono::{DateTime, Utc};
use herald_domain::api_key::{ApiKeyState, LimitChange, RateLimit, RateLimitChange};
use herald_domain::FieldError;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::Object;
use serde::Deserialize;
use uuid::Uuid;

/// Per-key rate-limit settings; a `null` (or absent) field uses the server default.
#[derive(Debug, Clone, Copy, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDto {
    #[oai(nullable)]
    pub read_per_minute: Option<u32>,
    #[oai(nullable)]
    pub write_per_minute: Option<u32>,
    #[oai(nullable)]
    pub daily_quota: Option<u32>,
}

impl RateLimitDto {
    /// The settings, or one error per limit that is zero (a key that may never call would be
    /// a revoked key with extra steps).
    pub fn parse(self) -> Result<RateLimit, Vec<FieldError>> {
        let limits = [
            ("read_per_minute", self.read_per_minute),
            ("write_per_minute", self.write_per_minute),
            ("daily_quota", self.daily_quota),
        ];
        let errors: Vec<FieldError> = limits
            .iter()
            .filter(|(_, value)| *value == Some(0))
            .map(|(name, _)| zero(name))
            .collect();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RateLimit {
            read_per_minute: self.read_per_minute,
            write_per_minute: self.write_per_minute,
            daily_quota: self.daily_quota,
        })
    }
}

fn zero(name: &str) -> FieldError {
    FieldError::new(format!("rate_limit.{name}"), "must be at least 1")
}

/// A change to a key's rate limits: a number sets a limit, `null` returns it to the server
/// default, and a limit left out stays as it is.
#[derive(Debug, Clone, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPatch {
    #[serde(default)]
    #[oai(nullable)]
    pub read_per_minute: MaybeUndefined<u32>,
    #[serde(default)]
    #[oai(nullable)]
    pub write_per_minute: MaybeUndefined<u32>,
    #[serde(default)]
    #[oai(nullable)]
    pub daily_quota: MaybeUndefined<u32>,
}

impl RateLimitPatch {
    pub fn parse(self) -> Result<RateLimitChange, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut change = |name: &str, value: MaybeUndefined<u32>| match value {
            MaybeUndefined::Undefined => LimitChange::Keep,
            MaybeUndefined::Null => LimitChange::Reset,
            MaybeUndefined::Value(0) => {
                errors.push(zero(name));
                LimitChange::Keep
            }
            MaybeUndefined::Value(n) => LimitChange::Set(n),
        };
        let parsed = RateLimitChange {
            read_per_minute: change("read_per_minute", self.read_per_minute),
            write_per_minute: change("write_per_minute", self.write_per_minute),
            daily_quota: change("daily_quota", self.daily_quota),
        };
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(errors)
        }
    }
}

/// `POST /api-keys` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    /// Required for admin callers creating a project key; project keys create keys in their own project.
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    /// Never more than the caller holds.
    pub scopes: Vec<String>,
    /// A key that expires creates only keys that expire no later than it.
    #[oai(nullable)]
    pub expires_in_days: Option<u32>,
    /// IPv4/IPv6 addresses or CIDRs the key may be used from; empty: anywhere. A key with an
    /// allowlist creates only keys whose allowlist is within its own.
    #[oai(default)]
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// Only an admin sets a key's own limits.
    #[oai(nullable)]
    pub rate_limit: Option<RateLimitDto>,
}

/// `PATCH /api-keys/{id}` body: only the given settings change.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    /// Only narrowing, unless the caller is an admin.
    #[oai(nullable)]
    pub scopes: Option<Vec<String>>,
    /// Set by a key with an allowlist: within its own.
    #[oai(nullable)]
    pub ip_allowlist: Option<Vec<String>>,
    /// Only an admin changes a key's limits. `null`, as for every field here, is the same as
    /// leaving it out.
    #[oai(nullable)]
    pub rate_limit: Option<RateLimitPatch>,
}

/// `POST /api-keys/{id}/rotate` body.
#[derive(Debug, Object, Deserialize, Default)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct KeyRotate {
    /// How long the old key keeps working: default 86400 (24 h), at most 604800 (7 days).
    #[oai(nullable)]
    pub grace_period_seconds: Option<i64>,
}

/// An API key, without its secret.
#[derive(Debug, Object)]
pub struct KeyDto {
    pub id: String,
    pub name: String,
    #[oai(nullable)]
    pub description: Option<String>,
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    pub scopes: Vec<String>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// The prefix and first characters of the key, to recognise it.
    pub start: String,
    pub ip_allowlist: Vec<String>,
    pub rate_limit: RateLimitDto,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// When an authenticated request last used the key (`null` before its first). Each
    /// replica writes its keys' uses every two seconds, so this and `usage_count` may be up to
    /// about two seconds behind.
    #[oai(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// Requests the key authenticated, including those then refused for a missing scope or a
    /// rate limit.
    pub usage_count: i64,
    /// The key this one replaced, if it came from a rotation.
    #[oai(nullable)]
    pub rotated_from: Option<String>,
    /// The key that replaces this one, once rotated.
    #[oai(nullable)]
    pub replaced_by: Option<String>,
}

/// Usage recorded for a key: `(count, last used)`.
pub type Usage = Option<(i64, DateTime<Utc>)>;

impl KeyDto {
    pub fn render(id: &str, key: &ApiKeyState, usage: Usage) -> Self {
        Self {
            id: id.to_owned(),
            name: key.name.as_str().to_owned(),
            description: key.description.clone(),
            project_id: key.project_id.map(|p| p.as_uuid()),
            scopes: key.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            status: key.status(Utc::now()).to_owned(),
            start: key.start.clone(),
            ip_allowlist: key.ip_allowlist.entries().collect(),
            rate_limit: RateLimitDto {
                read_per_minute: key.rate_limit.read_per_minute,
                write_per_minute: key.rate_limit.write_per_minute,
                daily_quota: key.rate_limit.daily_quota,
            },
            created_at: key.created_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            last_used_at: usage.map(|(_, at)| at),
            usage_count: usage.map_or(0, |(n, _)| n),
            rotated_from: key.rotated_from.as_ref().map(|k| k.to_string()),
            replaced_by: key.successor_id.as_ref().map(|k| k.to_string()),
        }
    }
}

/// A key resource plus its plaintext, shown once.
#[derive(Debug, Object)]
pub struct KeyWithSecret {
    #[oai(flatten)]
    pub resource: KeyDto,
    /// The full key. It is not stored and cannot be shown again.
    pub key: String,
}

#[derive(Debug, Object)]
pub struct KeyList {
    pub data: Vec<KeyDto>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}
