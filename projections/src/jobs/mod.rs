//! The jobs read model: one row per job with the columns that filters, leasing and the lease
//! reconciler need, plus the whole job (`doc`, the domain's `JobState`) for reads. A page of
//! events is applied in bulk: one read of the affected rows, the fold in memory, one upsert.

mod queries;

pub use queries::{
    due_for_expiry, expired_leases, get, lease_candidates, list, JobCursor, JobFilter, JobRow,
    SortOrder,
};

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_domain::job::{JobEvent, JobState};
use herald_store::StoredEvent;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::runtime::{check_sequence, Projection};

pub struct JobsProjection;

#[async_trait]
impl Projection for JobsProjection {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["job"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()> {
        self.apply_page(conn, &[event]).await
    }

    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> anyhow::Result<()> {
        let mut ids: Vec<Uuid> = Vec::with_capacity(events.len());
        for event in events {
            let id: Uuid = event.aggregate_id.parse()?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        // Planned for each page (not prepared once): a plan cached while the table was small
        // (a new database) would scan the whole table for every page until autovacuum
        // analyzes it, which a write-heavy start can take minutes to do.
        let stored: Vec<(Uuid, i64, Json<JobState>)> =
            sqlx::query_as("SELECT id, version, doc FROM jobs WHERE id = ANY($1)")
                .bind(&ids)
                .persistent(false)
                .fetch_all(&mut *conn)
                .await?;
        let mut jobs: HashMap<Uuid, (i64, JobState)> = stored
            .into_iter()
            .map(|(id, version, doc)| (id, (version, doc.0)))
            .collect();
        for event in events {
            let id: Uuid = event.aggregate_id.parse()?;
            let job_event: JobEvent = serde_json::from_value(event.payload.clone())?;
            let current = jobs.remove(&id);
            check_sequence(self.name(), event, current.as_ref().map(|(v, _)| *v))?;
            let Some(job) = JobState::fold(current.map(|(_, job)| job), &job_event) else {
                anyhow::bail!("job {id}: {} before job.queued", event.event_type);
            };
            jobs.insert(id, (event.sequence, job));
        }
        upsert(conn, &ids, &jobs).await
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM jobs").execute(conn).await?;
        Ok(())
    }
}

/// Writes the given jobs in one statement.
async fn upsert(
    conn: &mut PgConnection,
    ids: &[Uuid],
    jobs: &HashMap<Uuid, (i64, JobState)>,
) -> anyhow::Result<()> {
    let rows: Vec<(&Uuid, &(i64, JobState))> = ids
        .iter()
        .filter_map(|id| jobs.get(id).map(|j| (id, j)))
        .collect();
    let column = |f: fn(&JobState) -> DateTime<Utc>| -> Vec<DateTime<Utc>> {
        rows.iter().map(|(_, (_, job))| f(job)).collect()
    };
    let docs: Vec<serde_json::Value> = rows
        .iter()
        .map(|(_, (_, job))| serde_json::to_value(job))
        .collect::<Result<_, _>>()?;
    // Unnested in the select list, not `FROM unnest(…)`: no tuplestore per array.
    sqlx::query(
        "INSERT INTO jobs (id, project_id, kind, status, priority, created_at, updated_at, \
                           lease_expires_at, deleted, version, doc, finished_at, expired_at) \
         SELECT unnest($1::uuid[]), unnest($2::uuid[]), unnest($3::text[]), unnest($4::text[]), \
                unnest($5::int2[]), unnest($6::timestamptz[]), unnest($7::timestamptz[]), \
                unnest($8::timestamptz[]), unnest($9::bool[]), unnest($10::int8[]), \
                unnest($11::jsonb[]), unnest($12::timestamptz[]), unnest($13::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, priority = excluded.priority, \
             updated_at = excluded.updated_at, lease_expires_at = excluded.lease_expires_at, \
             deleted = excluded.deleted, version = excluded.version, doc = excluded.doc, \
             finished_at = excluded.finished_at, expired_at = excluded.expired_at",
    )
    .bind(rows.iter().map(|(id, _)| **id).collect::<Vec<Uuid>>())
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.project_id.as_uuid())
            .collect::<Vec<Uuid>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.kind.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.status.as_str())
            .collect::<Vec<&str>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, j))| i16::from(j.priority.value()))
            .collect::<Vec<i16>>(),
    )
    .bind(column(|j| j.created_at))
    .bind(column(|j| j.updated_at))
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.lease.as_ref().map(|l| l.expires_at))
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.deleted)
            .collect::<Vec<bool>>(),
    )
    .bind(rows.iter().map(|(_, (v, _))| *v).collect::<Vec<i64>>())
    .bind(docs)
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.finished_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, j))| j.expired_at)
            .collect::<Vec<Option<DateTime<Utc>>>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}
