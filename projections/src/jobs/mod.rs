//! The jobs read model: one row per job with the columns that filters, leasing and the lease
//! reconciler need, plus the whole job (`doc`, the domain's `JobState`) for reads.

mod queries;

pub use queries::{
    expired_leases, get, lease_candidates, list, JobCursor, JobFilter, JobRow, SortOrder,
};

use async_trait::async_trait;
use herald_domain::job::{JobEvent, JobState};
use herald_store::StoredEvent;
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
        let id: Uuid = event.aggregate_id.parse()?;
        let job_event: JobEvent = serde_json::from_value(event.payload.clone())?;
        let row: Option<(i64, sqlx::types::Json<JobState>)> =
            sqlx::query_as("SELECT version, doc FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        check_sequence(self.name(), event, row.as_ref().map(|(v, _)| *v))?;
        let Some(job) = JobState::fold(row.map(|(_, doc)| doc.0), &job_event) else {
            anyhow::bail!("job {id}: {} before job.queued", event.event_type);
        };
        sqlx::query(
            "INSERT INTO jobs (id, project_id, kind, status, priority, created_at, updated_at, \
                               lease_expires_at, deleted, version, doc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET status = $4, priority = $5, updated_at = $7, \
                 lease_expires_at = $8, deleted = $9, version = $10, doc = $11",
        )
        .bind(id)
        .bind(job.project_id.as_uuid())
        .bind(job.kind.as_str())
        .bind(job.status.as_str())
        .bind(i16::from(job.priority.value()))
        .bind(job.created_at)
        .bind(job.updated_at)
        .bind(job.lease.as_ref().map(|l| l.expires_at))
        .bind(job.deleted)
        .bind(event.sequence)
        .bind(sqlx::types::Json(&job))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM jobs").execute(conn).await?;
        Ok(())
    }
}
