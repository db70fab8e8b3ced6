//! Reads of the jobs read model. Deleted jobs are invisible to all of them.

use chrono::{DateTime, Utc};
use herald_domain::job::JobState;
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

/// A job row as the API needs it: the state, the version the row reflects, and the latest
/// version in the log (greater when the projection has not caught up with this job yet).
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub state: JobState,
    pub version: i64,
}

/// One job by id with the aggregate's latest version in the log, in a single round trip.
/// `Ok(None)`: no row yet. The caller compares the two versions to guarantee read-your-writes.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<(Option<JobRow>, i64)> {
    let row: Option<(Option<i64>, Option<sqlx::types::Json<JobState>>, i64)> = sqlx::query_as(
        "SELECT j.version, j.doc, \
                (SELECT coalesce(max(sequence), 0) FROM events \
                  WHERE aggregate_type = 'job' AND aggregate_id = $1::text) \
           FROM (SELECT 1) AS one LEFT JOIN jobs j ON j.id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?;
    let Some((version, doc, log_version)) = row else {
        return Ok((None, 0));
    };
    let job = match (version, doc) {
        (Some(version), Some(doc)) => Some(JobRow {
            id,
            state: doc.0,
            version,
        }),
        _ => None,
    };
    Ok((job, log_version))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Newest first (the default).
    #[default]
    CreatedDesc,
    CreatedAsc,
}

/// Where the previous page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
    /// Whether the page was oldest first (`sort=created_at`); absent in the newest-first
    /// cursors, which were issued without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ascending: bool,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// The projects to look in; `None`: every project (admin callers only).
    pub projects: Option<Vec<Uuid>>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub sort: SortOrder,
    pub after: Option<JobCursor>,
    /// Rows to return; callers ask for one more than a page to learn whether more exist.
    pub limit: i64,
}

pub async fn list(executor: impl PgExecutor<'_>, filter: &JobFilter) -> sqlx::Result<Vec<JobRow>> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT id, version, doc FROM jobs WHERE NOT deleted");
    if let Some(projects) = &filter.projects {
        sql.push(" AND project_id = ANY(")
            .push_bind(projects.clone())
            .push(")");
    }
    if let Some(status) = &filter.status {
        sql.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(kind) = &filter.kind {
        sql.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(after) = filter.created_after {
        sql.push(" AND created_at > ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        sql.push(" AND created_at < ").push_bind(before);
    }
    let (comparison, order) = match filter.sort {
        SortOrder::CreatedDesc => ("<", "DESC"),
        SortOrder::CreatedAsc => (">", "ASC"),
    };
    if let Some(cursor) = filter.after {
        sql.push(format!(" AND (created_at, id) {comparison} ("))
            .push_bind(cursor.created_at)
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    sql.push(format!(" ORDER BY created_at {order}, id {order} LIMIT "))
        .push_bind(filter.limit);
    let rows: Vec<(Uuid, i64, sqlx::types::Json<JobState>)> =
        sql.build_query_as().fetch_all(executor).await?;
    Ok(rows
        .into_iter()
        .map(|(id, version, doc)| JobRow {
            id,
            state: doc.0,
            version,
        })
        .collect())
}

/// Queued jobs a worker could lease, highest priority first, oldest first within a priority.
pub async fn lease_candidates(
    executor: impl PgExecutor<'_>,
    project_id: Option<Uuid>,
    kinds: &[String],
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM jobs \
          WHERE status = 'queued' AND NOT deleted \
            AND ($1::uuid IS NULL OR project_id = $1) \
            AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) \
          ORDER BY priority DESC, created_at, id LIMIT $3",
    )
    .bind(project_id)
    .bind(kinds)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Running jobs whose lease deadline has passed, for the lease reconciler.
pub async fn expired_leases(
    executor: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at <= $1 \
          ORDER BY lease_expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Finished jobs whose retention ended by `finished_before` and that have not expired yet, for
/// the retention sweeper (oldest first).
pub async fn due_for_expiry(
    executor: impl PgExecutor<'_>,
    finished_before: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND expired_at IS NULL AND NOT deleted \
           AND finished_at <= $1 ORDER BY finished_at LIMIT $2",
    )
    .bind(finished_before)
    .bind(limit)
    .fetch_all(executor)
    .await
}
