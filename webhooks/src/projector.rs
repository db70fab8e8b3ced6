//! The webhook projector: a projection over the whole log whose "read model" is the delivery
//! queue. For each event it finds the enabled endpoints of the event's project, and the
//! account-wide ones, whose filter matches and records one delivery per endpoint, in the page's transaction, with the
//! checkpoint. It keeps its own copy of the endpoints and of each aggregate's project (from
//! the creating events), so matching follows the log's order exactly and never waits on another
//! projection. The payload and `webhook-id` depend only on the event and the endpoint, so a
//! retry, a resend or a replay sends the same message.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use herald_domain::webhook_endpoint::{EndpointEvent, EndpointSettings};
use herald_store::StoredEvent;
use serde_json::{json, Value};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use herald_projections::Projection;

pub struct WebhookProjector {
    /// Woken after a page with deliveries commits.
    pub dispatcher: Arc<Notify>,
}

/// The `webhook-id` of an event for an endpoint: the same for every attempt, resend and replay.
pub fn webhook_id(endpoint: Uuid, global_position: i64) -> String {
    let id = Uuid::new_v5(&endpoint, &global_position.to_be_bytes());
    format!("msg_{}", id.simple())
}

/// What receivers get: `{"id", "type", "timestamp", "data"}`; `data` is the event's own fields
/// plus the id of the resource it is about (`job_id`, `api_key_id`, ...) and its project.
pub fn payload(event: &StoredEvent, project: Option<Uuid>) -> Value {
    let mut data = event.payload.clone();
    if let Some(fields) = data.as_object_mut() {
        fields.remove("type");
        fields.insert(
            format!("{}_id", event.aggregate_type),
            json!(event.aggregate_id),
        );
        if let Some(project) = project {
            fields.entry("project_id").or_insert(json!(project));
        }
    }
    json!({
        "id": format!("evt_{}", event.global_position),
        "type": event.event_type,
        "timestamp": event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
}

/// The project an event belongs to, from the event itself or the aggregate's creating event.
pub async fn project_of(
    conn: &mut PgConnection,
    cache: &mut HashMap<(String, String), Option<Uuid>>,
    event: &StoredEvent,
) -> anyhow::Result<Option<Uuid>> {
    if event.aggregate_type == "project" {
        return Ok(event.aggregate_id.parse().ok());
    }
    let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
    if let Some(project) = cache.get(&key) {
        return Ok(*project);
    }
    if event.sequence == 1 {
        let project = project_in(&event.payload);
        cache.insert(key, project);
        return Ok(project);
    }
    // Jobs, keys and endpoints name their project in their first event (a primary-key read).
    let first: Option<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(&key.0)
    .bind(&key.1)
    .fetch_optional(&mut *conn)
    .await?;
    let project = first.as_ref().and_then(project_in);
    cache.insert(key, project);
    Ok(project)
}

fn project_in(payload: &Value) -> Option<Uuid> {
    payload
        .get("project_id")
        .and_then(Value::as_str)
        .and_then(|p| p.parse().ok())
}

/// The enabled endpoints that hear a project's events (its own and the account-wide ones; for
/// events of no project, such as users', only the account-wide ones) and their settings.
async fn endpoints_of(
    conn: &mut PgConnection,
    project: Option<Uuid>,
) -> anyhow::Result<Vec<(Uuid, EndpointSettings)>> {
    let rows: Vec<(Uuid, sqlx::types::Json<EndpointSettings>)> = sqlx::query_as(
        "SELECT id, doc FROM webhook_endpoints \
         WHERE (project_id = $1 OR project_id IS NULL) AND enabled AND NOT deleted",
    )
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id, doc)| (id, doc.0)).collect())
}

#[derive(Default)]
struct Page {
    projects: HashMap<(String, String), Option<Uuid>>,
    endpoints: HashMap<Option<Uuid>, Vec<(Uuid, EndpointSettings)>>,
    deliveries: Vec<(Uuid, Uuid, i64, String, String, Value)>,
}

impl WebhookProjector {
    /// Keeps the projector's copy of the endpoints.
    async fn track(
        &self,
        conn: &mut PgConnection,
        page: &mut Page,
        event: &StoredEvent,
    ) -> anyhow::Result<()> {
        if event.aggregate_type != "webhook_endpoint" {
            return Ok(());
        }
        let id: Uuid = event.aggregate_id.parse()?;
        match serde_json::from_value::<EndpointEvent>(event.payload.clone())? {
            EndpointEvent::Created {
                project_id,
                settings,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, project_id, doc, enabled, created_at, created_position, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(id)
                .bind(project_id.map(|p| p.as_uuid()))
                .bind(sqlx::types::Json(&settings))
                .bind(settings.enabled)
                .bind(at)
                .bind(event.global_position)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
            EndpointEvent::Updated { settings, .. } => {
                sqlx::query("UPDATE webhook_endpoints SET doc = $2, enabled = $3, version = $4 WHERE id = $1")
                    .bind(id)
                    .bind(sqlx::types::Json(&settings))
                    .bind(settings.enabled)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
            }
            EndpointEvent::Disabled { .. } => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = false, doc = jsonb_set(doc, '{enabled}', 'false'), version = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
            EndpointEvent::Deleted { .. } => {
                sqlx::query("UPDATE webhook_endpoints SET deleted = true, enabled = false, version = $2 WHERE id = $1")
                    .bind(id)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
            }
            EndpointEvent::SecretRotated { .. } => {}
        }
        // An endpoint changed: the page's copies of endpoint lists are stale.
        page.endpoints.clear();
        Ok(())
    }
}

#[async_trait]
impl Projection for WebhookProjector {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["job", "api_key", "project", "user", "webhook_endpoint"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()> {
        self.apply_page(conn, &[event]).await
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> anyhow::Result<()> {
        let mut page = Page::default();
        for event in events {
            self.track(conn, &mut page, event).await?;
            let project = project_of(conn, &mut page.projects, event).await?;
            let endpoints = match page.endpoints.entry(project) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(endpoints_of(conn, project).await?)
                }
            };
            let body = payload(event, project);
            for (endpoint, settings) in endpoints.iter() {
                if settings.wants(&event.event_type) {
                    page.deliveries.push((
                        Uuid::now_v7(),
                        *endpoint,
                        event.global_position,
                        event.event_type.clone(),
                        webhook_id(*endpoint, event.global_position),
                        body.clone(),
                    ));
                }
            }
        }
        if page.deliveries.is_empty() {
            return Ok(());
        }
        let mut columns: (
            Vec<Uuid>,
            Vec<Uuid>,
            Vec<i64>,
            Vec<String>,
            Vec<String>,
            Vec<Value>,
        ) = Default::default();
        for (id, endpoint, position, kind, webhook_id, body) in page.deliveries {
            columns.0.push(id);
            columns.1.push(endpoint);
            columns.2.push(position);
            columns.3.push(kind);
            columns.4.push(webhook_id);
            columns.5.push(body);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, global_position, event_type, webhook_id, payload, status, next_attempt_at) \
             SELECT *, 'pending', now() FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[]) \
             ON CONFLICT (endpoint_id, global_position) DO NOTHING",
        )
        .bind(columns.0)
        .bind(columns.1)
        .bind(columns.2)
        .bind(columns.3)
        .bind(columns.4)
        .bind(columns.5)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn committed(&self) {
        self.dispatcher.notify_one();
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        // Deliveries and attempts are history, not a read model: a rebuild re-derives the
        // endpoint copy and the project map, and the unique (endpoint, event) key keeps the
        // deliveries that exist from being recorded twice.
        sqlx::query("DELETE FROM webhook_endpoints")
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
