//! Searching the log for people (`GET /api/v1/events`): filters by type, resource, actor and
//! time, restricted to what the caller may see, paged by global position. Each event comes
//! with the project it belongs to, taken from its aggregate's first event (or, for a project's
//! own events, its id). This is a listing, not a catch-up reader: a follower that must not miss
//! a late commit uses `log::read_after` (or the event stream) instead.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::log::{Row, COLUMNS};
use crate::StoredEvent;

#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    pub event_types: Option<Vec<String>>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// An API key id or user id from the event's metadata.
    pub actor_id: Option<String>,
    pub project: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// `(project, aggregate type)` pairs the caller may see; `None`: everything.
    pub visible: Option<Vec<(Uuid, String)>>,
    /// Continue after this global position (in the order asked for).
    pub after: Option<i64>,
    pub ascending: bool,
    pub limit: i64,
}

/// The matching events with their project, in global-position order.
pub async fn search(
    executor: impl PgExecutor<'_>,
    query: &EventSearch,
) -> sqlx::Result<Vec<(StoredEvent, Option<Uuid>)>> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT * FROM (SELECT {COLUMNS}, project_id FROM (SELECT e.*, \
           CASE WHEN e.aggregate_type = 'project' THEN e.aggregate_id::uuid \
                ELSE (SELECT (f.payload->>'project_id')::uuid FROM events f \
                       WHERE f.aggregate_type = e.aggregate_type \
                         AND f.aggregate_id = e.aggregate_id AND f.sequence = 1) END AS project_id \
         FROM events e WHERE true"
    ));
    if let Some(types) = &query.event_types {
        sql.push(" AND e.event_type = ANY(")
            .push_bind(types.clone())
            .push(")");
    }
    if let Some(kind) = &query.aggregate_type {
        sql.push(" AND e.aggregate_type = ").push_bind(kind.clone());
    }
    if let Some(id) = &query.aggregate_id {
        sql.push(" AND e.aggregate_id = ").push_bind(id.clone());
    }
    if let Some(actor) = &query.actor_id {
        sql.push(" AND e.metadata->>'actor_id' = ")
            .push_bind(actor.clone());
    }
    if let Some(from) = query.from {
        sql.push(" AND e.recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        sql.push(" AND e.recorded_at < ").push_bind(to);
    }
    if let Some(after) = query.after {
        let op = if query.ascending { " > " } else { " < " };
        sql.push(" AND e.global_position").push(op).push_bind(after);
    }
    sql.push(") scoped) found WHERE true");
    if let Some(project) = query.project {
        sql.push(" AND project_id = ").push_bind(project);
    }
    if let Some(visible) = &query.visible {
        let (projects, kinds): (Vec<Uuid>, Vec<String>) = visible.iter().cloned().unzip();
        sql.push(" AND (project_id, aggregate_type) IN (SELECT * FROM UNNEST(")
            .push_bind(projects)
            .push("::uuid[], ")
            .push_bind(kinds)
            .push("::text[]))");
    }
    let order = if query.ascending { "ASC" } else { "DESC" };
    sql.push(format!(" ORDER BY global_position {order} LIMIT "))
        .push_bind(query.limit);
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        row: Row,
        project_id: Option<Uuid>,
    }
    let found: Vec<Found> = sql.build_query_as().fetch_all(executor).await?;
    Ok(found
        .into_iter()
        .map(|f| (StoredEvent::from(f.row), f.project_id))
        .collect())
}
