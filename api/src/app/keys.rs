//! Creating API keys. The plaintext key exists only in the return value: the event stores its
//! peppered HMAC and its displayable start.

use chrono::{DateTime, Utc};
use herald_domain::api_key::{ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyToken};
use herald_domain::{ProjectId, Scopes};
use herald_store::{AggregateStore, CommandError, EventMetadata};

use crate::auth::hash_key;

pub struct NewKey {
    pub name: String,
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a key and returns its plaintext (show it once).
pub async fn create(
    store: &AggregateStore<ApiKey>,
    pepper: &[u8],
    metadata: &EventMetadata,
    key: NewKey,
) -> Result<ApiKeyToken, CommandError<ApiKeyError>> {
    let token = ApiKeyToken::generate();
    let command = ApiKeyCommand::Create {
        name: key.name,
        project_id: key.project_id,
        scopes: key.scopes,
        key_hash: hash_key(pepper, &token),
        start: token.start(),
        expires_at: key.expires_at,
        now: Utc::now(),
    };
    store
        .execute(token.id().as_str(), command, metadata, false)
        .await?;
    Ok(token)
}
