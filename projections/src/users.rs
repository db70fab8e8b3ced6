//! The users read model (`users`) and project membership (`project_members`), both from the
//! user events. Sessions are not projected: they are checked against the user aggregate.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_domain::user::UserEvent;
use herald_store::StoredEvent;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::runtime::{check_sequence, Projection};

pub struct UsersProjection;

#[async_trait]
impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["user"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()> {
        let id: Uuid = event.aggregate_id.parse()?;
        let version: Option<i64> = sqlx::query_scalar("SELECT version FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        check_sequence(self.name(), event, version)?;
        match serde_json::from_value(event.payload.clone())? {
            UserEvent::Created { email, role, at } => {
                sqlx::query(
                    "INSERT INTO users (id, email, role, created_at, version) \
                     VALUES ($1, $2, $3, $4, 0)",
                )
                .bind(id)
                .bind(email.as_str())
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::ProjectRoleGranted {
                project_id,
                role,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO project_members (project_id, user_id, role, updated_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, user_id) \
                     DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
                )
                .bind(project_id.as_uuid())
                .bind(id)
                .bind(role.as_str())
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            UserEvent::ProjectRoleRevoked { project_id, .. } => {
                sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                    .bind(project_id.as_uuid())
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            UserEvent::LoggedIn { .. }
            | UserEvent::LoggedOut { .. }
            | UserEvent::PasswordChanged { .. } => {}
        }
        sqlx::query("UPDATE users SET version = $2 WHERE id = $1")
            .bind(id)
            .bind(event.sequence)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM project_members")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM users").execute(conn).await?;
        Ok(())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: Uuid,
    pub email: String,
    pub role: String,
    pub updated_at: DateTime<Utc>,
}

/// A project's members, by email.
pub async fn members(executor: impl PgExecutor<'_>, project: Uuid) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, m.role, m.updated_at FROM project_members m \
           JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY u.email",
    )
    .bind(project)
    .fetch_all(executor)
    .await
}
