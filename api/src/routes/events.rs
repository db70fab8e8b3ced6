//! `GET /api/v1/events`: the domain event log as people read it, filtered and paged, limited to
//! what the caller may see (`Caller::event_visibility`: everything for admins and unbound
//! `audit:read` keys; otherwise the aggregates its scopes read, in its projects, or in every
//! project for a key bound to none).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use herald_store::search::{search, EventSearch};
use herald_store::window::{self, Resume, Walk};
use poem::web::sse::Event;
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
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

/// A stream of events as server-sent events: each with its type as the SSE event name and its
/// global position as the SSE id (what `Last-Event-ID` resumes from).
pub type LogEventStream = EventStream<BoxStream<'static, LogEvent>>;

pub(crate) fn sse(stream: BoxStream<'static, LogEvent>) -> LogEventStream {
    EventStream::new(stream)
        .to_event(|event| {
            Event::message(event.to_json_string())
                .event_type(event.event_type.clone())
                .id(event.global_position.to_string())
        })
        .keep_alive(std::time::Duration::from_secs(15))
}

/// `types=a,b` as a list; one that names no type (`types=`) is refused, not taken to match
/// nothing. A type no event has matches nothing, as in Stripe's events list.
fn type_list(field: &str, types: Option<String>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = types else { return Ok(None) };
    let list: Vec<String> = list
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    match list.is_empty() {
        true => Err(ApiError::field(field, "must name at least one event type")),
        false => Ok(Some(list)),
    }
}

/// The kinds of resource whose events the log holds.
const AGGREGATE_TYPES: [&str; 5] = ["job", "api_key", "webhook_endpoint", "project", "user"];

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
    /// The project the resource belongs to: none for a user's events other than its project
    /// role changes, for keys bound to no project and for account-wide webhook endpoints.
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    pub data: serde_json::Value,
    #[oai(nullable)]
    pub actor_type: Option<String>,
    #[oai(nullable)]
    pub actor_id: Option<String>,
    #[oai(nullable)]
    pub request_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct LogEventList {
    pub data: Vec<LogEvent>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Events")]
impl EventsApi {
    /// List events of the log
    ///
    /// Newest first (`order=asc` for oldest first). Filters: `type` (comma-separated event
    /// types), `aggregate_type`, `aggregate_id`, `actor` (an API key id or user id), `project`,
    /// `from`, `to` (recorded time). Admins (admin users and admin keys, the keys bound to no
    /// project) see every event; others see the events of their projects that their scopes
    /// read (`jobs:read`: job events, `keys:read`: key events, `webhooks:read`: endpoint
    /// events, any of them: the project's own, `audit:read`: all of the project's), and an
    /// admin key narrowed to other scopes sees the events they read in every project.
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
        super::audit_filters::range(from.0, to.0)?;
        let ascending = match order.0.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => return Err(ApiError::field("order", "must be `asc` or `desc`").into()),
        };
        if let Some(kind) = aggregate_type.0.as_deref() {
            if !AGGREGATE_TYPES.contains(&kind) {
                let known = AGGREGATE_TYPES.join(", ");
                return Err(
                    ApiError::field("aggregate_type", &format!("must be one of {known}")).into(),
                );
            }
        }
        // A cursor carries the order it pages in: followed in the other order it would
        // skip or repeat events.
        let resume = cursor
            .0
            .as_deref()
            .map(cursor::decode::<Resume>)
            .transpose()?;
        match resume {
            Some(r) if r.ascending() != ascending => {
                return Err(ApiError::field(
                    "cursor",
                    "this cursor pages in the other `order`: ask with the order it came from",
                )
                .into())
            }
            // Positions start at 1: a cursor naming less was never issued.
            Some(r) if r.after() < 1 => {
                return Err(ApiError::field("cursor", "not a cursor returned by this API").into())
            }
            _ => {}
        }
        let after = resume.map(Resume::after);
        let mut query = EventSearch {
            event_types: type_list("type", event_type.0)?,
            // An id alone is looked up under every type Herald writes, so the primary key finds
            // its events instead of a scan of the whole log.
            aggregate_types: match (aggregate_type.0, &aggregate_id.0) {
                (Some(kind), _) => Some(vec![kind]),
                (None, Some(_)) => Some(AGGREGATE_TYPES.map(str::to_owned).to_vec()),
                (None, None) => None,
            },
            aggregate_id: aggregate_id.0,
            actor_id: actor.0,
            project: project.0,
            from: from.0,
            to: to.0,
            visible,
            after,
            ascending,
            limit: limit + 1,
            walk: Walk::Whole,
        };
        query.walk = window::walk(&self.state.pool, &query, resume).await?;
        let mut found = search(&self.state.pool, &query).await?;
        let has_more = cursor::page(&mut found, limit);
        let next_cursor = has_more
            .then(|| {
                found
                    .last()
                    .map(|e| cursor::encode(&Resume::next(query.walk, e.global_position, &query)))
            })
            .flatten();
        let data = found.into_iter().map(render).collect();
        Ok(Json(LogEventList {
            data,
            has_more,
            next_cursor,
        }))
    }

    /// Stream events as they happen
    ///
    /// Server-sent events: every event the caller may see (as `GET /events` decides), filtered
    /// by `types`, from now on, or, with `Last-Event-ID` (the id of the last event received),
    /// from right after that event: a reconnecting client misses nothing and gets nothing
    /// twice. Each message's `event` is the event type, its `id` the global position, its
    /// `data` the event as `GET /events` shows it. A comment every 15 s keeps the connection.
    #[oai(path = "/events/stream", method = "get", operation_id = "streamEvents")]
    async fn stream(
        &self,
        auth: Credentials,
        types: Query<Option<String>>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> ApiResult<LogEventStream> {
        let caller = self.state.authenticate(&auth).await?;
        let visible = caller.event_visibility()?;
        let resume = match last_event_id.0.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) => Some(id.parse::<i64>().map_err(|_| {
                ApiError::field(
                    "Last-Event-ID",
                    "must be the id of an event received before",
                )
            })?),
        };
        let Some(after) = super::streams::start(&self.state, resume).await? else {
            return Err(ApiError::field("Last-Event-ID", "no event has this id").into());
        };
        let filter = super::streams::LogFilter {
            visible,
            event_types: type_list("types", types.0)?,
        };
        let listener = super::listener::Listener::of(&auth);
        let stream = super::streams::log(self.state.clone(), listener, after, filter);
        Ok(sse(stream))
    }
}

/// An event as callers see it (the `type` tag and hidden fields left out of `data`).
pub(crate) fn render(event: herald_store::StoredEvent) -> LogEvent {
    let mut data = event.payload;
    if let Some(fields) = data.as_object_mut() {
        fields.remove("type");
        herald_domain::redact_event_fields(&event.aggregate_type, fields);
    }
    let meta = |key: &str| event.metadata.get(key).cloned();
    LogEvent {
        id: format!("evt_{}", event.global_position),
        global_position: event.global_position,
        event_type: event.event_type,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        project_id: event.project_id,
        actor_type: meta("actor_type"),
        actor_id: meta("actor_id"),
        request_id: meta("request_id"),
        data,
        recorded_at: event.recorded_at,
    }
}
