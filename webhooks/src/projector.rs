//! The webhook projector: a projection over the whole log whose "read model" is the delivery
//! queue. For each event it finds the enabled endpoints of the event's project, and the
//! account-wide ones, whose filter matches and records one delivery per endpoint, in the page's transaction, with the
//! checkpoint. It keeps its own copy of the endpoints and of each aggregate's project (from
//! the creating events), so matching follows the log's order exactly and never waits on another
//! projection. The payload and `webhook-id` depend only on the event and the endpoint, so a
//! retry, a resend or a replay sends the same message.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use herald_domain::webhook_endpoint::{EndpointEvent, EndpointSettings};
use herald_store::StoredEvent;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use herald_projections::Projection;

use crate::dispatcher::Due;
use crate::inbox::Inbox;

pub struct WebhookProjector {
    /// Where a page's new deliveries go once it commits (and the dispatcher's wake-up).
    pub inbox: Arc<Inbox>,
}

/// An endpoint as the projector matches and hands over: id, settings, signing secrets.
type Endpoint = (Uuid, sqlx::types::Json<EndpointSettings>, Vec<String>);

/// The `webhook-id` of an event for an endpoint: the same for every attempt, resend and replay.
pub fn webhook_id(endpoint: Uuid, global_position: i64) -> String {
    let id = Uuid::new_v5(&endpoint, &global_position.to_be_bytes());
    format!("msg_{}", id.simple())
}

/// What receivers get: `{"id", "type", "timestamp", "data"}`; `data` is the event's own fields
/// (less what is never shown, `redact_event_fields`) plus the id of the resource it is about
/// (`job_id`, `api_key_id`, ...) and its project.
pub fn payload(event: &StoredEvent) -> Value {
    let mut data = event.payload.clone();
    if let Some(fields) = data.as_object_mut() {
        fields.remove("type");
        herald_domain::redact_event_fields(&event.aggregate_type, fields);
        fields.insert(
            format!("{}_id", event.aggregate_type),
            json!(event.aggregate_id),
        );
        if let Some(project) = event.project_id {
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

/// The project whose own endpoints hear `event` (account-wide endpoints hear every event):
/// the event's project, except for a user's events, which only account-wide endpoints hear. A
/// user's role in a project is that project's event for its auditors (`audit:read`), not for
/// everyone who may read or set up the project's endpoints.
pub fn audience(event: &StoredEvent) -> Option<Uuid> {
    event.project_id.filter(|_| event.aggregate_type != "user")
}

/// The enabled endpoints that hear a project's events (its own and the account-wide ones; for
/// events of no project, such as users', only the account-wide ones) and their settings.
async fn endpoints_of(
    conn: &mut PgConnection,
    project: Option<Uuid>,
) -> anyhow::Result<Vec<Endpoint>> {
    Ok(sqlx::query_as(
        "SELECT e.id, e.doc, ARRAY(SELECT s.secret FROM webhook_secrets s WHERE s.endpoint_id = e.id \
                  AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.id DESC) \
           FROM webhook_endpoints e \
          WHERE (e.project_id = $1 OR e.project_id IS NULL) AND e.enabled AND NOT e.deleted",
    )
    .bind(project)
    .fetch_all(&mut *conn)
    .await?)
}

#[derive(Default)]
struct Page {
    endpoints: HashMap<Option<Uuid>, Vec<Endpoint>>,
    deliveries: Vec<Delivery>,
}

/// A delivery the page records.
struct Delivery {
    id: Uuid,
    endpoint: Uuid,
    position: i64,
    kind: String,
    webhook_id: String,
    payload: Value,
}

impl WebhookProjector {
    /// Stages the deliveries this page recorded (not those already there) for the dispatcher.
    fn stage(&self, page: &Page, recorded: HashSet<Uuid>) {
        let endpoints: HashMap<Uuid, &Endpoint> = page
            .endpoints
            .values()
            .flatten()
            .map(|endpoint| (endpoint.0, endpoint))
            .collect();
        let handed = page
            .deliveries
            .iter()
            .filter(|d| recorded.contains(&d.id))
            .filter_map(|d| {
                let (_, settings, secrets) = endpoints.get(&d.endpoint)?;
                Some(Due {
                    id: d.id,
                    endpoint_id: d.endpoint,
                    webhook_id: d.webhook_id.clone(),
                    payload: d.payload.clone(),
                    attempts: 0,
                    settings: settings.clone(),
                    active: true,
                    secrets: secrets.clone(),
                })
            })
            .collect();
        self.inbox.stage(handed);
    }

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
            let project = audience(event);
            let endpoints = match page.endpoints.entry(project) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(endpoints_of(conn, project).await?)
                }
            };
            // Built once per event, and only if some endpoint wants it.
            let mut body = None;
            for (endpoint, settings, _) in endpoints.iter() {
                if settings.wants(&event.event_type) {
                    let body = body.get_or_insert_with(|| payload(event));
                    page.deliveries.push(Delivery {
                        id: Uuid::now_v7(),
                        endpoint: *endpoint,
                        position: event.global_position,
                        kind: event.event_type.clone(),
                        webhook_id: webhook_id(*endpoint, event.global_position),
                        payload: body.clone(),
                    });
                }
            }
        }
        self.inbox.stage(Vec::new());
        if page.deliveries.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&Delivery) -> Value| page.deliveries.iter().map(f).collect::<Vec<_>>();
        // Recorded leased to this process's dispatcher, which gets them once the page commits.
        let lease = self.inbox.lease().map(|l| l.as_secs_f64());
        // Unnested in the select list, not `FROM unnest(…)`: no tuplestore per array.
        let recorded: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (id, endpoint_id, global_position, event_type, webhook_id, payload, \
                                             status, next_attempt_at, leased_until) \
             SELECT unnest($1::uuid[]), unnest($2::uuid[]), unnest($3::bigint[]), unnest($4::text[]), \
                    unnest($5::text[]), unnest($6::jsonb[]), 'pending', now(), now() + make_interval(secs => $7) \
             ON CONFLICT (endpoint_id, global_position) DO NOTHING RETURNING id",
        )
        .bind(page.deliveries.iter().map(|d| d.id).collect::<Vec<_>>())
        .bind(page.deliveries.iter().map(|d| d.endpoint).collect::<Vec<_>>())
        .bind(page.deliveries.iter().map(|d| d.position).collect::<Vec<_>>())
        .bind(page.deliveries.iter().map(|d| d.kind.as_str()).collect::<Vec<_>>())
        .bind(page.deliveries.iter().map(|d| d.webhook_id.as_str()).collect::<Vec<_>>())
        .bind(column(|d| d.payload.clone()))
        .bind(lease)
        .fetch_all(&mut *conn)
        .await?;
        if lease.is_some() {
            self.stage(&page, recorded.into_iter().collect());
        }
        Ok(())
    }

    fn committed(&self) {
        self.inbox.publish();
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
