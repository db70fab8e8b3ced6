//! The projects read model.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_domain::project::ProjectEvent;
use herald_store::StoredEvent;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::runtime::{check_sequence, Projection};

pub struct ProjectsProjection;

#[async_trait]
impl Projection for ProjectsProjection {
    fn name(&self) -> &'static str {
        "projects"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["project"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()> {
        let id: Uuid = event.aggregate_id.parse()?;
        let version: Option<i64> = sqlx::query_scalar("SELECT version FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        check_sequence(self.name(), event, version)?;
        match serde_json::from_value(event.payload.clone())? {
            ProjectEvent::Created { name, at } => {
                sqlx::query(
                    "INSERT INTO projects (id, name, created_at, version) VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(name.as_str())
                .bind(at)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
            ProjectEvent::Renamed { name, .. } => {
                sqlx::query("UPDATE projects SET name = $2, version = $3 WHERE id = $1")
                    .bind(id)
                    .bind(name.as_str())
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM projects").execute(conn).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ProjectRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Projects among `only` (all, for `None`) in creation order, after `after` (keyset pagination
/// on the time-ordered id).
pub async fn list(
    executor: impl PgExecutor<'_>,
    only: Option<Vec<Uuid>>,
    after: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<ProjectRow>> {
    sqlx::query_as(
        "SELECT id, name, created_at FROM projects WHERE ($1::uuid IS NULL OR id > $1) \
          AND ($3::uuid[] IS NULL OR id = ANY($3)) ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .bind(only)
    .fetch_all(executor)
    .await
}
