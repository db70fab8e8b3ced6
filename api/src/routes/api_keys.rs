//! `/api/v1/api-keys`: the whole key lifecycle. Scopes `keys:read` / `keys:write`; a project key
//! manages its own project's keys, admins manage all. A key never grants more than its caller
//! holds.

use std::sync::Arc;

use chrono::{Duration, Utc};
use herald_domain::Scope;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::history::HistoryList;
use super::key_input::{self, NewKeyInput};
use super::key_models::*;
use super::ApiTags;
use crate::app::keys as app;
use crate::auth::Credentials;
use crate::http::context::RequestContext;
use crate::http::cursor;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

const DEFAULT_GRACE_SECONDS: i64 = 24 * 3600;
const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

pub struct ApiKeysApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Created {
    /// The key; `key` is its plaintext, shown this once.
    #[oai(status = 201)]
    Created(Json<KeyWithSecret>, #[oai(header = "Location")] String),
}

impl ApiKeysApi {
    async fn usage_of(&self, ids: &[String]) -> Result<Vec<(String, Usage)>, ApiError> {
        let rows = herald_projections::api_keys::usage(&self.state.pool, ids).await?;
        Ok(ids
            .iter()
            .map(|id| {
                let usage = rows.iter().find(|r| &r.0 == id).map(|r| (r.1, r.2));
                (id.clone(), usage)
            })
            .collect())
    }

    async fn render(
        &self,
        id: &str,
        key: &herald_domain::api_key::ApiKeyState,
    ) -> Result<KeyDto, ApiError> {
        let usage = self
            .usage_of(&[id.to_owned()])
            .await?
            .pop()
            .and_then(|(_, u)| u);
        Ok(KeyDto::render(id, key, usage))
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Create an API key
    ///
    /// Answers the key resource plus `key`, the plaintext, which is never shown again. The new
    /// key's scopes must be within the caller's, and a calling key's IP allowlist and expiry
    /// bound the new key's. Scope `keys:write`.
    #[oai(path = "/api-keys", method = "post", operation_id = "createApiKey")]
    async fn create(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<KeyCreate>,
    ) -> ApiResult<Created> {
        let caller = self.state.authorize(&auth, Scope::KeysWrite).await?;
        let NewKeyInput {
            mut key,
            asked_project,
            sets_limits,
        } = key_input::new_key(body.0)?;
        let (projects, scopes) = (&self.state.projects, &key.scopes);
        key.project_id = app::target_project(projects, &caller, asked_project, scopes).await?;
        if sets_limits && !caller.is_admin() {
            return Err(
                ApiError::Forbidden("only an admin sets a key's rate limits".into()).into(),
            );
        }
        let (held, scopes) = (caller.scopes_in(key.project_id), &key.scopes);
        let beyond = held.map_or_else(|| scopes.iter().collect(), |held| scopes.beyond(&held));
        if !beyond.is_empty() {
            let names: Vec<&str> = beyond.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::Forbidden(format!(
                "a key cannot grant scopes it does not hold: {}",
                names.join(", ")
            ))
            .into());
        }
        let reach = (Some(&key.ip_allowlist), Some(key.expires_at));
        app::within_caller_reach(&self.state.keys, &caller, reach.0, reach.1).await?;
        let (token, state) = app::create(
            &self.state.keys,
            self.state.verifier.pepper(),
            &metadata(&caller, context),
            key,
        )
        .await
        .map_err(ApiError::from)?;
        let id = token.id().to_string();
        let resource = KeyDto::render(&id, &state, None);
        let location = format!("/api/v1/api-keys/{id}");
        Ok(Created::Created(
            Json(KeyWithSecret {
                resource,
                key: token.expose().to_owned(),
            }),
            location,
        ))
    }

    /// List API keys
    ///
    /// The caller's project's keys (admins: every key), newest first. Scope `keys:read`.
    #[oai(path = "/api-keys", method = "get", operation_id = "listApiKeys")]
    async fn list(
        &self,
        auth: Credentials,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<KeyList>> {
        let caller = self.state.authorize(&auth, Scope::KeysRead).await?;
        let limit = cursor::limit(limit.0)?;
        let after = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let project = caller.visible_projects();
        let mut rows =
            herald_projections::api_keys::list(&self.state.pool, project, after, limit + 1).await?;
        let has_more = cursor::page(&mut rows, limit);
        let next_cursor = has_more
            .then(|| rows.last())
            .flatten()
            .map(|r| cursor::encode(&(r.doc.0.created_at, r.id.clone())));
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let usage = self.usage_of(&ids).await?;
        let data = rows
            .iter()
            .zip(usage)
            .map(|(row, (_, usage))| KeyDto::render(&row.id, &row.doc.0, usage))
            .collect();
        Ok(Json(KeyList {
            data,
            has_more,
            next_cursor,
        }))
    }

    /// Get an API key
    #[oai(path = "/api-keys/:id", method = "get", operation_id = "getApiKey")]
    async fn get(&self, auth: Credentials, id: Path<String>) -> ApiResult<Json<KeyDto>> {
        let caller = self.state.authorize(&auth, Scope::KeysRead).await?;
        let key = app::load(&self.state.keys, &caller, &id.0).await?;
        Ok(Json(self.render(&id.0, &key).await?))
    }

    /// Update an API key
    ///
    /// Changes name, description, IP allowlist, rate limits; scopes only narrowed unless the
    /// caller is an admin. Scope `keys:write`.
    #[oai(
        path = "/api-keys/:id",
        method = "patch",
        operation_id = "updateApiKey"
    )]
    async fn update(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<String>,
        body: JsonBody<KeyPatch>,
    ) -> ApiResult<Json<KeyDto>> {
        let caller = self.state.authorize(&auth, Scope::KeysWrite).await?;
        let update = key_input::key_update(body.0)?;
        let allowlist = update.ip_allowlist.as_ref();
        app::within_caller_reach(&self.state.keys, &caller, allowlist, None).await?;
        let key = app::update(
            &self.state.keys,
            &caller,
            &metadata(&caller, context),
            &id.0,
            update,
        )
        .await?;
        self.state.verifier.invalidate(&id.0);
        Ok(Json(self.render(&id.0, &key).await?))
    }

    /// Rotate an API key
    ///
    /// Issues a new key with the same settings (answered once, with `key`); the old key keeps
    /// working for `grace_period_seconds` (default 24 h, at most 7 days, never past its own
    /// expiry), then is refused. Scope `keys:write`.
    #[oai(
        path = "/api-keys/:id/rotate",
        method = "post",
        operation_id = "rotateApiKey"
    )]
    async fn rotate(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<String>,
        body: JsonBody<KeyRotate>,
    ) -> ApiResult<Created> {
        let caller = self.state.authorize(&auth, Scope::KeysWrite).await?;
        let grace = body.0.grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        if !(0..=MAX_GRACE_SECONDS).contains(&grace) {
            return Err(ApiError::field(
                "grace_period_seconds",
                "must be between 0 and 604800 (7 days)",
            )
            .into());
        }
        let (token, state) = app::rotate(
            &self.state.keys,
            self.state.verifier.pepper(),
            &caller,
            &metadata(&caller, context),
            &id.0,
            Duration::seconds(grace),
        )
        .await?;
        self.state.verifier.invalidate(&id.0);
        let new_id = token.id().to_string();
        let resource = KeyDto::render(&new_id, &state, None);
        Ok(Created::Created(
            Json(KeyWithSecret {
                resource,
                key: token.expose().to_owned(),
            }),
            format!("/api/v1/api-keys/{new_id}"),
        ))
    }

    /// Revoke an API key
    ///
    /// The very next request with the key is refused, on this replica at once and on the others
    /// within a second. Scope `keys:write`.
    #[oai(
        path = "/api-keys/:id/revoke",
        method = "post",
        operation_id = "revokeApiKey"
    )]
    async fn revoke(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<String>,
    ) -> ApiResult<Json<KeyDto>> {
        let caller = self.state.authorize(&auth, Scope::KeysWrite).await?;
        let command = herald_domain::api_key::ApiKeyCommand::Revoke { now: Utc::now() };
        let key = app::execute(
            &self.state.keys,
            &caller,
            &metadata(&caller, context),
            &id.0,
            command,
        )
        .await?;
        self.state.verifier.invalidate(&id.0);
        Ok(Json(self.render(&id.0, &key).await?))
    }

    /// An API key's history
    ///
    /// Every event of the key, oldest first, with who caused it, for auditors. Scope `keys:read`.
    #[oai(
        path = "/api-keys/:id/history",
        method = "get",
        operation_id = "getApiKeyHistory"
    )]
    async fn history(&self, auth: Credentials, id: Path<String>) -> ApiResult<Json<HistoryList>> {
        let caller = self.state.authorize(&auth, Scope::KeysRead).await?;
        app::load(&self.state.keys, &caller, &id.0).await?;
        let events =
            herald_store::log::aggregate_history(&self.state.pool, "api_key", &id.0).await?;
        Ok(Json(HistoryList::render(events)))
    }
}
