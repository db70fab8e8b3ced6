//! Searching the log for people (`GET /api/v1/events`): filters by type, resource, actor and
//! time, restricted to what the caller may see, paged by global position. Each event comes
//! with the project it belongs to: the `project_id` column, written with the event (a
//! project's own id, else its aggregate's first event's project; migration 0020), and
//! `events_by_project` finds a project's events in order. This is a listing, not a catch-up
//! reader: a follower that must not miss a late commit uses `log::read_after` (or the event
//! stream) instead.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::log::{Row, COLUMNS};
use crate::window::Walk;
use crate::StoredEvent;

#[derive(Debug, Clone, Default)]
pub struct EventSearch {
    pub event_types: Option<Vec<String>>,
    /// One of these aggregate types. With `aggregate_id`, give every type it may have (not
    /// `None`): the primary key `(aggregate_type, aggregate_id, sequence)` then finds the
    /// aggregate's events, where an id alone would scan the whole log.
    pub aggregate_types: Option<Vec<String>>,
    pub aggregate_id: Option<String>,
    /// An API key id or user id from the event's metadata.
    pub actor_id: Option<String>,
    pub project: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// What the caller may see.
    pub visible: Visible,
    /// Continue after this global position (in the order asked for).
    pub after: Option<i64>,
    pub ascending: bool,
    pub limit: i64,
    /// How the page walks the log (`window::walk` decides): from its end, only between the
    /// `from`/`to` window's first and last positions, or the window read first and sorted.
    pub walk: Walk,
}

/// What of the log a caller may read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Visible {
    /// Every event (admins, and keys with `audit:read` bound to no project).
    #[default]
    All,
    /// The events of these aggregate types, in every project and in none (a key bound to no
    /// project whose scopes read some resources everywhere).
    Kinds(Vec<String>),
    /// The events of these `(project, aggregate type)` pairs.
    Pairs(Vec<(Uuid, String)>),
}

impl Visible {
    /// Whether an event of `aggregate_type` in `project` is visible.
    pub fn shows(&self, project: Option<Uuid>, aggregate_type: &str) -> bool {
        match (self, project) {
            (Visible::All, _) => true,
            (Visible::Kinds(kinds), _) => kinds.iter().any(|kind| kind == aggregate_type),
            (Visible::Pairs(pairs), Some(project)) => pairs
                .iter()
                .any(|(p, kind)| *p == project && kind == aggregate_type),
            (Visible::Pairs(_), None) => false,
        }
    }
}

/// The matching events, in global-position order.
pub async fn search(
    executor: impl PgExecutor<'_>,
    query: &EventSearch,
) -> sqlx::Result<Vec<StoredEvent>> {
    // Sent unprepared, so each search is planned with its values: a plan kept for any project
    // could walk the whole log for a project that holds little of it.
    let found: Vec<Row> = statement("", query)
        .build_query_as()
        .persistent(false)
        .fetch_all(executor)
        .await?;
    Ok(found.into_iter().map(StoredEvent::from).collect())
}

/// The plan PostgreSQL makes for `search`'s statement with these values (`EXPLAIN`, one line
/// of text per row): how tests and operators see which index a search reads.
pub async fn explain(executor: impl PgExecutor<'_>, query: &EventSearch) -> sqlx::Result<String> {
    let lines: Vec<String> = statement("EXPLAIN ", query)
        .build_query_scalar()
        .persistent(false)
        .fetch_all(executor)
        .await?;
    Ok(lines.join("\n"))
}

/// Above this many projects a caller's search is one statement over all of them (their events
/// found through the index, then sorted) instead of a branch each: a statement's parameters
/// and its planning time grow with its branches.
const MAX_BRANCHES: usize = 32;

/// The search's statement, after `prefix`. For a caller limited to a few projects, a branch per
/// project, each reading `events_by_project` in position order and stopping at the page's end,
/// merged by position: a rare project's page does not walk the whole log, and a busy one's
/// does not fetch and sort all of its events.
fn statement(prefix: &str, query: &EventSearch) -> QueryBuilder<'static, Postgres> {
    let order = if query.ascending { "ASC" } else { "DESC" };
    let mut sql = QueryBuilder::new(prefix);
    if query.walk == Walk::WindowFirst {
        // Materialized, so the planner cannot fold it back into a walk in position order.
        sql.push("WITH w AS MATERIALIZED (SELECT * FROM events e WHERE true");
        times(&mut sql, query);
        sql.push(") ");
    }
    let visible = match &query.visible {
        Visible::Pairs(pairs) => pairs,
        everywhere => {
            let kinds = match everywhere {
                Visible::Kinds(kinds) => Some(kinds.clone()),
                _ => None,
            };
            select(&mut sql, query, query.project, kinds);
            sql.push(format!(" ORDER BY global_position {order} LIMIT "))
                .push_bind(query.limit);
            return sql;
        }
    };
    let mut kinds: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for (project, kind) in visible {
        if query.project.is_none_or(|asked| asked == *project) {
            kinds.entry(*project).or_default().push(kind.clone());
        }
    }
    if kinds.len() > MAX_BRANCHES {
        let (projects, kinds): (Vec<Uuid>, Vec<String>) = kinds
            .into_iter()
            .flat_map(|(project, kinds)| kinds.into_iter().map(move |kind| (project, kind)))
            .unzip();
        let mut distinct = projects.clone();
        distinct.dedup();
        select(&mut sql, query, None, None);
        sql.push(" AND e.project_id = ANY(")
            .push_bind(distinct)
            .push(") AND (e.project_id, e.aggregate_type) IN (SELECT * FROM UNNEST(")
            .push_bind(projects)
            .push("::uuid[], ")
            .push_bind(kinds)
            .push("::text[]))");
        sql.push(format!(" ORDER BY global_position {order} LIMIT "))
            .push_bind(query.limit);
        return sql;
    }
    sql.push("SELECT * FROM (");
    if kinds.is_empty() {
        sql.push(format!("SELECT {COLUMNS} FROM events WHERE false"));
    }
    for (at, (project, kinds)) in kinds.into_iter().enumerate() {
        if at > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push("(");
        select(&mut sql, query, Some(project), Some(kinds));
        sql.push(format!(" ORDER BY global_position {order} LIMIT "))
            .push_bind(query.limit)
            .push(")");
    }
    sql.push(format!(") found ORDER BY global_position {order} LIMIT "))
        .push_bind(query.limit);
    sql
}

/// `SELECT … FROM events` with the search's filters, limited to `project` and `kinds` (the
/// aggregate types visible there) when given.
fn select(
    sql: &mut QueryBuilder<'static, Postgres>,
    query: &EventSearch,
    project: Option<Uuid>,
    kinds: Option<Vec<String>>,
) {
    let source = if query.walk == Walk::WindowFirst {
        "w"
    } else {
        "events"
    };
    sql.push(format!("SELECT {COLUMNS} FROM {source} e WHERE true"));
    if let Walk::Between(first, last) = query.walk {
        sql.push(" AND e.global_position BETWEEN ")
            .push_bind(first)
            .push(" AND ")
            .push_bind(last);
    }
    if let Some(project) = project {
        sql.push(" AND e.project_id = ").push_bind(project);
    }
    if let Some(kinds) = kinds {
        sql.push(" AND e.aggregate_type = ANY(")
            .push_bind(kinds)
            .push(")");
    }
    if let Some(types) = &query.event_types {
        sql.push(" AND e.event_type = ANY(")
            .push_bind(types.clone())
            .push(")");
    }
    if let Some(kinds) = &query.aggregate_types {
        sql.push(" AND e.aggregate_type = ANY(")
            .push_bind(kinds.clone())
            .push(")");
    }
    if let Some(id) = &query.aggregate_id {
        sql.push(" AND e.aggregate_id = ").push_bind(id.clone());
    }
    if let Some(actor) = &query.actor_id {
        sql.push(" AND e.metadata->>'actor_id' = ")
            .push_bind(actor.clone());
    }
    times(sql, query);
    if let Some(after) = query.after {
        let op = if query.ascending { " > " } else { " < " };
        sql.push(" AND e.global_position").push(op).push_bind(after);
    }
}

/// The search's time bounds on `e.recorded_at`.
pub(crate) fn times(sql: &mut QueryBuilder<'static, Postgres>, query: &EventSearch) {
    if let Some(from) = query.from {
        sql.push(" AND e.recorded_at >= ").push_bind(from);
    }
    if let Some(to) = query.to {
        sql.push(" AND e.recorded_at < ").push_bind(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_visibility_shows() {
        let project = Uuid::from_u128(1);
        let kinds = Visible::Kinds(vec!["job".into()]);
        assert!(kinds.shows(Some(project), "job"));
        assert!(kinds.shows(Some(Uuid::from_u128(2)), "job"));
        assert!(!kinds.shows(Some(project), "api_key"));
        let pairs = Visible::Pairs(vec![(project, "job".into())]);
        assert!(pairs.shows(Some(project), "job"));
        assert!(!pairs.shows(Some(Uuid::from_u128(2)), "job"));
        assert!(!pairs.shows(None, "job"));
        assert!(Visible::All.shows(None, "user"));
    }
}
