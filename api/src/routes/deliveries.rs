//! `/api/v1/webhooks/{id}/deliveries` and `/replay`: the delivery log with every attempt, a
//! manual resend, and replays that re-project the log for one endpoint in the background.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::webhook_endpoint::{EndpointState, EVENT_TYPES, PING};
use herald_domain::Scope;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use uuid::Uuid;

use super::webhook_models::AttemptDto;
use super::ApiTags;
use crate::app::replay;
use crate::app::webhooks as app;
use crate::auth::Credentials;
use crate::http::cursor;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct DeliveriesApi {
    pub state: Arc<AppState>,
}

/// One delivery: an event for an endpoint, and where it stands.
#[derive(Debug, Object, sqlx::FromRow)]
pub struct DeliveryDto {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The `webhook-id` header: the same for every attempt, resend and replay.
    pub webhook_id: String,
    pub event_type: String,
    /// The event's position in the global log.
    pub global_position: i64,
    /// `pending`, `succeeded` or `failed` (retries exhausted, or the endpoint was disabled).
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due; `null` once the delivery succeeded or failed for good.
    #[oai(nullable)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub last_status: Option<i32>,
    #[oai(nullable)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct DeliveryList {
    pub data: Vec<DeliveryDto>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Object)]
pub struct DeliveryDetail {
    #[oai(flatten)]
    pub delivery: DeliveryDto,
    /// What is sent.
    pub payload: serde_json::Value,
    /// Every attempt, oldest first.
    pub attempts_log: Vec<AttemptDto>,
}

/// `POST /webhooks/{id}/replay` body: `since` or `from_position`.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[oai(nullable)]
    pub since: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub from_position: Option<i64>,
    #[oai(nullable)]
    pub event_types: Option<Vec<String>>,
    /// Only send again what failed (and what was never sent); default false.
    #[oai(nullable)]
    pub only_failed: Option<bool>,
}

#[derive(ApiResponse)]
pub enum ReplayAccepted {
    /// The replay runs in the background; follow it at `Location`.
    #[oai(status = 202)]
    Accepted(Json<replay::ReplayDto>, #[oai(header = "Location")] String),
}

const COLUMNS: &str =
    "id, endpoint_id, webhook_id, event_type, global_position, status, attempts, \
                       CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, \
                       last_status, last_error, created_at, updated_at";

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Webhooks")]
impl DeliveriesApi {
    /// List an endpoint's deliveries
    ///
    /// Newest first, filtered by `status` (`pending`, `succeeded`, `failed`), `event_type`,
    /// `from`, `to`; a value no delivery can have is refused (400). Scope `webhooks:read`.
    #[oai(
        path = "/webhooks/:id/deliveries",
        method = "get",
        operation_id = "listDeliveries"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        status: Query<Option<String>>,
        event_type: Query<Option<String>>,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<DeliveryList>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksRead).await?;
        app::load(&self.state, &caller, id.0).await?;
        filters(status.0.as_deref(), event_type.0.as_deref())?;
        super::audit_filters::range(from.0, to.0)?;
        let limit = cursor::limit(limit.0)?;
        let after: Option<Uuid> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let mut rows: Vec<DeliveryDto> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 \
               AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR event_type = $3) \
               AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5) \
               AND ($6::uuid IS NULL OR id < $6) ORDER BY id DESC LIMIT $7"
        ))
        .bind(id.0)
        .bind(status.0)
        .bind(event_type.0)
        .bind(from.0)
        .bind(to.0)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.state.pool)
        .await?;
        let has_more = cursor::page(&mut rows, limit);
        let next_cursor = has_more
            .then(|| rows.last().map(|d| cursor::encode(&d.id)))
            .flatten();
        Ok(Json(DeliveryList {
            data: rows,
            has_more,
            next_cursor,
        }))
    }

    /// Get a delivery with every attempt
    ///
    /// Scope `webhooks:read`.
    #[oai(
        path = "/webhooks/:id/deliveries/:delivery_id",
        method = "get",
        operation_id = "getDelivery"
    )]
    async fn get(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        delivery_id: Path<Uuid>,
    ) -> ApiResult<Json<DeliveryDetail>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksRead).await?;
        app::load(&self.state, &caller, id.0).await?;
        Ok(Json(self.detail(id.0, delivery_id.0).await?))
    }

    /// Resend a delivery
    ///
    /// One attempt now, whatever the delivery's state; answers the attempt. A success marks the
    /// delivery succeeded. Scope `webhooks:write`.
    #[oai(
        path = "/webhooks/:id/deliveries/:delivery_id/resend",
        method = "post",
        operation_id = "resendDelivery"
    )]
    async fn resend(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        delivery_id: Path<Uuid>,
    ) -> ApiResult<Json<AttemptDto>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let endpoint = app::load(&self.state, &caller, id.0).await?;
        let detail = self.detail(id.0, delivery_id.0).await?;
        let attempt = replay::resend(
            &self.state,
            (id.0, &endpoint),
            &detail.delivery.webhook_id,
            delivery_id.0,
            &detail.payload,
        )
        .await?;
        Ok(Json(attempt))
    }

    /// Replay events to an endpoint
    ///
    /// Re-projects the log from `since` (a time) or `from_position` for this endpoint: every
    /// matching event is sent again (or for the first time, if the endpoint missed it while
    /// disabled or before it existed) with its original `webhook-id`. `event_types`, if given,
    /// must be types the endpoint receives. Runs in the background. Scope `webhooks:write`.
    #[oai(
        path = "/webhooks/:id/replay",
        method = "post",
        operation_id = "replayWebhook"
    )]
    async fn replay(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        body: JsonBody<ReplayRequest>,
    ) -> ApiResult<ReplayAccepted> {
        let caller = self.state.authorize(&auth, Scope::WebhooksWrite).await?;
        let endpoint = app::load(&self.state, &caller, id.0).await?;
        let body = body.0;
        super::audit_filters::within_years("since", body.since)?;
        replay_types(&endpoint, body.event_types.as_deref())?;
        let from = match (body.since, body.from_position) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(
                    ApiError::field("since", "give either `since` or `from_position`").into(),
                )
            }
            (None, Some(position)) if position < 0 => {
                return Err(ApiError::field("from_position", "must not be negative").into())
            }
            (None, Some(position)) => position,
            (Some(since), None) => replay::position_at(&self.state.pool, since).await?,
        };
        let replay = replay::start(
            self.state.clone(),
            id.0,
            from,
            body.event_types,
            body.only_failed.unwrap_or(false),
        )
        .await?;
        let location = format!("/api/v1/webhooks/{}/replays/{}", id.0, replay.id);
        Ok(ReplayAccepted::Accepted(Json(replay), location))
    }

    /// Follow a replay
    ///
    /// Scope `webhooks:read`.
    #[oai(
        path = "/webhooks/:id/replays/:replay_id",
        method = "get",
        operation_id = "getReplay"
    )]
    async fn get_replay(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        replay_id: Path<Uuid>,
    ) -> ApiResult<Json<replay::ReplayDto>> {
        let caller = self.state.authorize(&auth, Scope::WebhooksRead).await?;
        app::load(&self.state, &caller, id.0).await?;
        let replay = replay::get(&self.state.pool, id.0, replay_id.0)
            .await?
            .ok_or_else(|| ApiError::not_found("replay"))?;
        Ok(Json(replay))
    }
}

impl DeliveriesApi {
    async fn detail(&self, endpoint: Uuid, delivery: Uuid) -> Result<DeliveryDetail, ApiError> {
        let row: Option<DeliveryDto> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2"
        ))
        .bind(delivery)
        .bind(endpoint)
        .fetch_optional(&self.state.pool)
        .await?;
        let delivery_row = row.ok_or_else(|| ApiError::NotFound {
            code: "DELIVERY_NOT_FOUND",
            detail: "delivery not found".into(),
        })?;
        let payload: serde_json::Value =
            sqlx::query_scalar("SELECT payload FROM webhook_deliveries WHERE id = $1")
                .bind(delivery)
                .fetch_one(&self.state.pool)
                .await?;
        let attempts_log = replay::attempts(&self.state.pool, delivery).await?;
        Ok(DeliveryDetail {
            delivery: delivery_row,
            payload,
            attempts_log,
        })
    }
}

/// A `status` and `event_type` a delivery can have: a filter no delivery can match is a typo,
/// refused rather than answered with an empty page.
fn filters(status: Option<&str>, event_type: Option<&str>) -> Result<(), ApiError> {
    if status.is_some_and(|s| !["pending", "succeeded", "failed"].contains(&s)) {
        return Err(ApiError::field(
            "status",
            "must be pending, succeeded or failed",
        ));
    }
    if event_type.is_some_and(|t| !EVENT_TYPES.contains(&t) || t == PING) {
        return Err(ApiError::field(
            "event_type",
            "unknown event type (see GET /api/v1/event-types)",
        ));
    }
    Ok(())
}

/// The `event_types` of a replay: each one the endpoint receives (a replay sends nothing else),
/// so a typo or a type it never hears is refused rather than replaying nothing.
fn replay_types(endpoint: &EndpointState, types: Option<&[String]>) -> Result<(), ApiError> {
    let Some(types) = types else {
        return Ok(());
    };
    if types.is_empty() {
        return Err(ApiError::field(
            "event_types",
            "list at least one event type, or leave it out for all the endpoint receives",
        ));
    }
    for kind in types {
        if !endpoint.hears_from_the_log(kind) {
            return Err(ApiError::field(
                "event_types",
                &format!("this endpoint does not receive `{kind}` (see its event_types)"),
            ));
        }
    }
    Ok(())
}
