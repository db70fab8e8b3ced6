//! The API keys read model: what listings show and what key verification loads on a cache
//! miss. It holds the key's HMAC, never the key. Rows are the domain's `ApiKeyState` folded from
//! the key's events, spread over columns.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use herald_domain::api_key::{ApiKeyEvent, ApiKeyState};
use herald_store::StoredEvent;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::runtime::{check_sequence, Projection};

pub struct ApiKeysProjection;

#[async_trait]
impl Projection for ApiKeysProjection {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &["api_key"]
    }

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()> {
        let id = &event.aggregate_id;
        let current: Option<i64> = sqlx::query_scalar("SELECT version FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        check_sequence(self.name(), event, current)?;
        let key_event: ApiKeyEvent = serde_json::from_value(event.payload.clone())?;
        // Every event but `created` starts from the stored row, rebuilt from the events so far.
        let history = if current.is_some() {
            herald_store::log::aggregate_history(&mut *conn, "api_key", id).await?
        } else {
            vec![]
        };
        let mut state = None;
        for past in history.iter().filter(|e| e.sequence < event.sequence) {
            state = ApiKeyState::fold(state, &serde_json::from_value(past.payload.clone())?);
        }
        let Some(key) = ApiKeyState::fold(state, &key_event) else {
            anyhow::bail!("api key {id}: {} before api_key.created", event.event_type);
        };
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        let allowlist: Vec<String> = key.ip_allowlist.entries().collect();
        sqlx::query(
            "INSERT INTO api_keys (id, name, project_id, scopes, key_hash, start, expires_at, \
                 revoked_at, created_at, version, description, ip_allowlist, rate_limit, \
                 rotated_from, successor_id, updated_at, doc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (id) DO UPDATE SET name = $2, scopes = $4, expires_at = $7, \
                 revoked_at = $8, version = $10, description = $11, ip_allowlist = $12, \
                 rate_limit = $13, successor_id = $15, updated_at = $16, doc = $17",
        )
        .bind(id)
        .bind(key.name.as_str())
        .bind(key.project_id.map(|p| p.as_uuid()))
        .bind(scopes)
        .bind(&key.key_hash)
        .bind(&key.start)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(key.created_at)
        .bind(event.sequence)
        .bind(&key.description)
        .bind(allowlist)
        .bind(sqlx::types::Json(key.rate_limit))
        .bind(key.rotated_from.as_ref().map(|k| k.to_string()))
        .bind(key.successor_id.as_ref().map(|k| k.to_string()))
        .bind(key.updated_at)
        .bind(sqlx::types::Json(&key))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM api_keys").execute(conn).await?;
        Ok(())
    }
}

/// A listed key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub doc: sqlx::types::Json<ApiKeyState>,
}

/// Keys in the given projects (or all, for `None`), newest first, after the `(created_at, id)`
/// cursor.
pub async fn list(
    executor: impl PgExecutor<'_>,
    projects: Option<Vec<Uuid>>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> sqlx::Result<Vec<KeyRow>> {
    let mut sql: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT id, doc FROM api_keys WHERE doc IS NOT NULL");
    if let Some(projects) = projects {
        sql.push(" AND project_id = ANY(")
            .push_bind(projects)
            .push(")");
    }
    if let Some((created_at, id)) = after {
        sql.push(" AND (created_at, id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    sql.build_query_as().fetch_all(executor).await
}

/// Recorded usage per key id: `(key id, count, last used)`.
pub async fn usage(
    executor: impl PgExecutor<'_>,
    ids: &[String],
) -> sqlx::Result<Vec<(String, i64, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT key_id, usage_count, last_used_at FROM api_key_usage WHERE key_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(executor)
    .await
}

/// Keys whose expiry has passed at `now` and is not recorded yet, for the expiry sweeper.
pub async fn due_for_expiry(
    executor: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT id FROM api_keys WHERE expires_at IS NOT NULL AND revoked_at IS NULL \
           AND (doc->>'expired_at') IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(executor)
    .await
}
