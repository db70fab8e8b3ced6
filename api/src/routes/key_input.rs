//! The bodies of key creation and change turned into domain values: every field that does not
//! parse is named in one 422, and nothing is decided about who may do what (the handlers and
//! the aggregate do that).

use chrono::{Duration, Utc};
use herald_domain::api_key::{parse_description, IpAllowlist, KeyName, KeyUpdate};
use herald_domain::{FieldError, Scopes};

use super::key_models::{KeyCreate, KeyPatch, RateLimitPatch};
use crate::app::keys::NewKey;
use crate::http::problem::ApiError;

/// A `POST /api-keys` body, parsed. The key has no project yet: the handler decides it from
/// `asked_project` and the caller.
pub(super) struct NewKeyInput {
    pub key: NewKey,
    pub asked_project: Option<uuid::Uuid>,
    /// Whether the body set limits (only an admin may).
    pub sets_limits: bool,
}

fn scopes(raw: &[String], field: &str) -> Result<Scopes, FieldError> {
    Scopes::parse(raw).map_err(|message| FieldError::new(field, message))
}

fn collect<T>(errors: &mut Vec<FieldError>, result: Result<T, FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

pub(super) fn new_key(body: KeyCreate) -> Result<NewKeyInput, ApiError> {
    let mut errors = Vec::new();
    let name = collect(&mut errors, KeyName::parse(&body.name));
    let description = collect(&mut errors, parse_description(body.description));
    let scopes = collect(&mut errors, scopes(&body.scopes, "scopes"));
    let ip_allowlist = collect(&mut errors, IpAllowlist::parse(&body.ip_allowlist));
    let expires_at = match body.expires_in_days {
        Some(days) if !(1..=3650).contains(&days) => {
            errors.push(FieldError::new(
                "expires_in_days",
                "must be between 1 and 3650",
            ));
            None
        }
        days => days.map(|d| Utc::now() + Duration::days(i64::from(d))),
    };
    let rate_limit = body.rate_limit.map(|r| r.parse()).transpose();
    let rate_limit = rate_limit.map_err(|e| errors.extend(e)).ok().flatten();
    match (name, description, scopes, ip_allowlist) {
        (Some(name), Some(description), Some(scopes), Some(ip_allowlist)) if errors.is_empty() => {
            Ok(NewKeyInput {
                key: NewKey {
                    name,
                    description,
                    project_id: None,
                    scopes,
                    expires_at,
                    ip_allowlist,
                    rate_limit: rate_limit.unwrap_or_default(),
                },
                asked_project: body.project_id,
                sets_limits: rate_limit.is_some(),
            })
        }
        _ => Err(ApiError::Validation(errors)),
    }
}

pub(super) fn key_update(body: KeyPatch) -> Result<KeyUpdate, ApiError> {
    let mut errors = Vec::new();
    let update = KeyUpdate {
        name: body
            .name
            .as_deref()
            .map(KeyName::parse)
            .and_then(|r| collect(&mut errors, r)),
        description: body
            .description
            .map(|d| parse_description(Some(d)))
            .and_then(|r| collect(&mut errors, r)),
        scopes: body
            .scopes
            .as_deref()
            .map(|s| scopes(s, "scopes"))
            .and_then(|r| collect(&mut errors, r)),
        ip_allowlist: body
            .ip_allowlist
            .as_deref()
            .map(IpAllowlist::parse)
            .and_then(|r| collect(&mut errors, r)),
        rate_limit: body
            .rate_limit
            .map(RateLimitPatch::parse)
            .and_then(|r| r.map_err(|e| errors.extend(e)).ok()),
    };
    if errors.is_empty() {
        Ok(update)
    } else {
        Err(ApiError::Validation(errors))
    }
}
