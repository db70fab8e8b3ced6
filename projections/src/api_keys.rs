//! The API keys read model: what listings show and what key verification loads on a cache
//! miss. It holds the key's HMAC, never the key.

use async_trait::async_trait;
use herald_domain::api_key::ApiKeyEvent;
use herald_store::StoredEvent;
use sqlx::PgConnection;

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
        let version: Option<i64> = sqlx::query_scalar("SELECT version FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        check_sequence(self.name(), event, version)?;
        match serde_json::from_value(event.payload.clone())? {
            ApiKeyEvent::Created {
                name,
                project_id,
                scopes,
                key_hash,
                start,
                expires_at,
                at,
            } => {
                let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                sqlx::query(
                    "INSERT INTO api_keys (id, name, project_id, scopes, key_hash, start, \
                                           expires_at, created_at, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(id)
                .bind(name)
                .bind(project_id.map(|p| p.as_uuid()))
                .bind(scopes)
                .bind(key_hash)
                .bind(start)
                .bind(expires_at)
                .bind(at)
                .bind(event.sequence)
                .execute(&mut *conn)
                .await?;
            }
            ApiKeyEvent::Revoked { at } => {
                sqlx::query("UPDATE api_keys SET revoked_at = $2, version = $3 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .bind(event.sequence)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM api_keys").execute(conn).await?;
        Ok(())
    }
}
