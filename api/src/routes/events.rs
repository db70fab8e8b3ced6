//! `GET /api/v1/events`: the domain event log as people read it, filtered and paged, limited to
//! what the caller may see (`Caller::event_visibility`: everything for admins and unbound
//! `audit:read` keys; otherwise the aggregates its scopes read, in its projects).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_store::search::{search, EventSearch};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::auth::Credentials;
use crate::http::cursor;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct EventsApi {
    pub state: Arc<AppState>,
}

/// Payload fields never shown (an API key's HMAC).
const HIDDEN: &[&str] = &["key_hash"];

/// One event of the log.
#[derive(Debug, Object)]
pub struct LogEvent {
    /// `evt_<global position>`, as in webhook payloads.
    pub id: String,
    pub global_position: i64,
    #[oai(rename = "type")]
    pub event_type: String,
    /// `job`, `api_key`, `webhook_endpoint`, `project` or `user`.
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position in the resource's own history, from 1.
    pub sequence: i64,
    /// The project the resource belongs to (none for users and admin keys).
    pub project_id: Option<Uuid>,
    pub data: serde_json::Value,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub request_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct LogEventList {
    pub data: Vec<LogEvent>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Events")]
impl EventsApi {
    /// List events of the log
    ///
    /// Newest first (`order=asc` for oldest first). Filters: `type` (comma-separated event
    /// types), `aggregate_type`, `aggregate_id`, `actor` (an API key id or user id), `project`,
    /// `from`, `to` (recorded time). Admins and `audit:read` keys bound to no project see every
    /// event; others see the events of their projects that their scopes read (`jobs:read`: job
    /// events, `keys:read`: key events, `webhooks:read`: endpoint events, any of them: the
    /// project's own, `audit:read`: all of the project's).
    #[oai(path = "/events", method = "get", operation_id = "listEvents")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Credentials,
        #[oai(name = "type")] event_type: Query<Option<String>>,
        aggregate_type: Query<Option<String>>,
        aggregate_id: Query<Option<String>>,
        actor: Query<Option<String>>,
        project: Query<Option<Uuid>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        order: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<LogEventList>> {
        let caller = self.state.authenticate(&auth).await?;
        let visible = caller.event_visibility()?;
        let limit = cursor::limit(limit.0)?;
        let ascending = match order.0.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(ApiError::field("order", "must be `asc` or `desc`").into()),
        };
        let query = EventSearch {
            event_types: event_type.0.map(|list| {
                list.split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            }),
            aggregate_type: aggregate_type.0,
            aggregate_id: aggregate_id.0,
            actor_id: actor.0,
            project: project.0,
            from: from.0,
            to: to.0,
            visible,
            after: cursor.0.as_deref().map(cursor::decode).transpose()?,
            ascending,
            limit: limit + 1,
        };
        let mut found = search(&self.state.pool, &query).await?;
        let has_more = cursor::page(&mut found, limit);
        let next_cursor = has_more
            .then(|| {
                found
                    .last()
                    .map(|(e, _)| cursor::encode(&e.global_position))
            })
            .flatten();
        let data = found
            .into_iter()
            .map(|(event, project_id)| {
                let mut data = event.payload;
                if let Some(fields) = data.as_object_mut() {
                    fields.remove("type");
                    for hidden in HIDDEN {
                        fields.remove(*hidden);
                    }
                }
                let meta = |key: &str| event.metadata.get(key).cloned();
                LogEvent {
                    id: format!("evt_{}", event.global_position),
                    global_position: event.global_position,
                    event_type: event.event_type,
                    aggregate_type: event.aggregate_type,
                    aggregate_id: event.aggregate_id,
                    sequence: event.sequence,
                    project_id,
                    actor_type: meta("actor_type"),
                    actor_id: meta("actor_id"),
                    request_id: meta("request_id"),
                    data,
                    recorded_at: event.recorded_at,
                }
            })
            .collect();
        Ok(Json(LogEventList {
            data,
            has_more,
            next_cursor,
        }))
    }
}
