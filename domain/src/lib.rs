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
pub const HIDDEN_FIELDS: &[&str] = &["key_hash"];

pub use file::FileRef;
pub use ids::{JobId, KeyId, ProjectId, SessionId, UserId};
pub use scope::{Scope, Scopes};
pub use validation::FieldError;
