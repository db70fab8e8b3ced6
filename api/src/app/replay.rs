//! Resends and replays. A resend is one manual attempt of an existing delivery. A replay walks
//! the log from a position up to where it ended when the replay was asked for, and for every
//! event of the endpoint's project that its filter (and the replay's) matches, queues the
//! delivery again, or for the first time when the endpoint never got it. The payload and
//! `webhook-id` are derived from the event and the endpoint exactly as the projector derives
//! them, so receivers that dedupe on `webhook-id` see a replayed message as the same message.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::webhook_endpoint::EndpointState;
use herald_webhooks::dispatcher::{active_secrets, record_attempt};
use herald_webhooks::sender::Message;
use poem_openapi::Object;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::http::problem::ApiError;
use crate::routes::webhook_models::AttemptDto;
use crate::state::AppState;

/// A replay and how far it got.
#[derive(Debug, Object, sqlx::FromRow)]
pub struct ReplayDto {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub from_position: i64,
    /// The last position the replay covers (the end of the log when it was asked for).
    pub to_position: i64,
    /// How far it has read.
    pub scanned_until: i64,
    /// Deliveries queued so far.
    pub queued: i64,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The first position recorded at or after `since`.
pub async fn position_at(pool: &PgPool, since: DateTime<Utc>) -> sqlx::Result<i64> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT min(global_position) FROM events WHERE recorded_at >= $1")
            .bind(since)
            .fetch_one(pool)
            .await?;
    match position {
        Some(position) => Ok(position),
        None => {
            sqlx::query_scalar("SELECT coalesce(max(global_position), 0) + 1 FROM events")
                .fetch_one(pool)
                .await
        }
    }
}

pub async fn get(pool: &PgPool, endpoint: Uuid, id: Uuid) -> sqlx::Result<Option<ReplayDto>> {
    sqlx::query_as(
        "SELECT id, endpoint_id, from_position, to_position, scanned_until, queued, status, created_at, finished_at \
           FROM webhook_replays WHERE id = $1 AND endpoint_id = $2",
    )
    .bind(id)
    .bind(endpoint)
    .fetch_optional(pool)
    .await
}

/// Records the replay and starts it in the background (`replay_runs`).
pub async fn start(
    state: Arc<AppState>,
    endpoint_id: Uuid,
    from: i64,
    event_types: Option<Vec<String>>,
    only_failed: bool,
) -> Result<ReplayDto, ApiError> {
    let (id, runner) = (Uuid::now_v7(), Uuid::now_v7());
    let to: i64 = sqlx::query_scalar("SELECT coalesce(max(global_position), 0) FROM events")
        .fetch_one(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO webhook_replays (id, endpoint_id, from_position, to_position, event_types, only_failed, \
                                      scanned_until, status, runner, leased_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, now() + make_interval(secs => $9))",
    )
    .bind(id)
    .bind(endpoint_id)
    .bind(from)
    .bind(to)
    .bind(&event_types)
    .bind(only_failed)
    .bind(from - 1)
    .bind(runner)
    .bind(super::replay_runs::LEASE_SECONDS)
    .execute(&state.pool)
    .await?;
    let replay = get(&state.pool, endpoint_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("replay"))?;
    super::replay_runs::spawn(state, id, runner);
    Ok(replay)
}

/// One manual attempt of a delivery now.
pub async fn resend(
    state: &AppState,
    (endpoint_id, endpoint): (Uuid, &EndpointState),
    webhook_id: &str,
    delivery: Uuid,
    payload: &Value,
) -> Result<AttemptDto, ApiError> {
    let secrets = active_secrets(&state.pool, endpoint_id).await?;
    let body = serde_json::to_vec(payload).map_err(ApiError::internal)?;
    let attempted_at = Utc::now();
    let outcome = state
        .webhook_sender
        .send(Message {
            url: &endpoint.settings.url,
            webhook_id,
            body: &body,
            secrets: &secrets,
            endpoint: endpoint_id,
            headers: &endpoint.settings.headers,
        })
        .await;
    record_attempt(&state.pool, delivery, &outcome, true).await?;
    if outcome.succeeded() {
        sqlx::query("UPDATE webhook_deliveries SET status = 'succeeded', last_status = $2, last_error = NULL, updated_at = now() WHERE id = $1")
            .bind(delivery)
            .bind(outcome.status.map(i32::from))
            .execute(&state.pool)
            .await?;
    }
    Ok(AttemptDto::manual(attempted_at, outcome))
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempted_at: DateTime<Utc>,
    duration_ms: f64,
    status_code: Option<i32>,
    error_class: Option<String>,
    response_body: Option<String>,
    manual: bool,
}

/// Every attempt of a delivery, oldest first.
pub async fn attempts(pool: &PgPool, delivery: Uuid) -> sqlx::Result<Vec<AttemptDto>> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempted_at, duration_ms, status_code, error_class, response_body, manual \
           FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(delivery)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| AttemptDto {
            attempted_at: row.attempted_at,
            succeeded: row.error_class.is_none(),
            status_code: row.status_code,
            duration_ms: row.duration_ms,
            error_class: row.error_class,
            response_body: row.response_body,
            manual: row.manual,
        })
        .collect())
}
