//! Herald's domain: the aggregates (jobs, projects, API keys, users), the commands they accept, the
//! events they emit and the rules between the two. Everything here is pure: no database, no
//! HTTP, no clock (the time of a command travels inside the command), so the rules can be
//! tested as given/when/then specifications. The `store` crate persists these events and the
//! `projections` crate folds them into read models.

pub mod api_key;
pub mod client_network;
pub mod file;
pub mod ids;
pub mod job;
pub mod name;
pub mod project;
pub mod role;
pub mod scope;
pub mod transcript;
pub mod user;
pub mod validation;
pub mod webhook_endpoint;

/// Event payload fields never shown outside the log: not to API callers (`GET /events`, a
/// key's history) nor to webhook receivers. A key's HMAC under the pepper.
const HIDDEN_FIELDS: &[&str] = &["key_hash"];

/// What an endpoint's custom header values read as outside the log.
const REDACTED: &str = "[redacted]";

/// Takes out of an event's payload fields what is never shown outside the log (API callers
/// and webhook receivers alike): `HIDDEN_FIELDS`, and the values of a webhook endpoint's custom
/// headers, which are often its receiver's own credentials (their names stay, each value reads
/// `REDACTED`; `GET /webhooks/{id}` shows them to the endpoint's managers).
pub fn redact_event_fields(
    aggregate_type: &str,
    fields: &mut serde_json::Map<String, serde_json::Value>,
) {
    for hidden in HIDDEN_FIELDS {
        fields.remove(*hidden);
    }
    if aggregate_type == "webhook_endpoint" {
        if let Some(serde_json::Value::Object(headers)) = fields.get_mut("headers") {
            for value in headers.values_mut() {
                *value = REDACTED.into();
            }
        }
    }
}

pub use file::FileRef;
pub use ids::{JobId, KeyId, ProjectId, SessionId, UserId};
pub use scope::{Scope, Scopes};
pub use validation::FieldError;
