//! Checkpoint rows: reading and locking them, reporting lag, and rebuilding a projection.

use chrono::{DateTime, Utc};
use herald_store::Position;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::Projection;

/// Makes sure the projection has a checkpoint row (at the start of the log).
pub(crate) async fn ensure(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads the checkpoint and locks its row until the transaction ends, which serialises page
/// processing with rebuilds.
pub(crate) async fn lock(conn: &mut PgConnection, name: &str) -> sqlx::Result<Position> {
    let (tx_id, global_position): (i64, i64) = sqlx::query_as(
        "SELECT tx_id::text::bigint, global_position FROM projection_checkpoints \
         WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(Position {
        tx_id,
        global_position,
    })
}

pub(crate) async fn advance(
    conn: &mut PgConnection,
    name: &str,
    to: Position,
    applied: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = $2::bigint::text::xid8, global_position = $3, \
         events_applied = events_applied + $4, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(to.tx_id)
    .bind(to.global_position)
    .bind(applied)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a projection stands, for `GET /admin/projections`.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub tx_id: i64,
    pub global_position: i64,
    /// Events the projection has read since its last rebuild (including skipped types).
    pub events_applied: i64,
    /// Events in the log that the projection has not read yet (counted up to a million).
    pub lag: i64,
    pub updated_at: DateTime<Utc>,
}

pub async fn status(pool: &PgPool) -> sqlx::Result<Vec<ProjectionStatus>> {
    let rows: Vec<(String, i64, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.name, c.tx_id::text::bigint, c.global_position, c.events_applied, \
                (SELECT count(*) FROM (SELECT 1 FROM events e \
                  WHERE (e.tx_id, e.global_position) > (c.tx_id, c.global_position) \
                  ORDER BY e.tx_id, e.global_position LIMIT 1000000) behind), \
                c.updated_at \
           FROM projection_checkpoints c ORDER BY c.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(name, tx_id, global_position, events_applied, lag, updated_at)| ProjectionStatus {
                name,
                tx_id,
                global_position,
                events_applied,
                lag,
                updated_at,
            },
        )
        .collect())
}

/// Empties a projection's read model and moves its checkpoint back to the start of the log, in
/// one transaction, noting where the log ends (`rebuild_tx`, `rebuild_position`). The runner that holds the projection (in this process or another) then
/// rebuilds it from the log; the server keeps answering meanwhile.
pub async fn rebuild(pool: &PgPool, projection: &dyn Projection) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    ensure(&mut tx, projection.name()).await?;
    lock(&mut tx, projection.name()).await?;
    projection.reset(&mut tx).await?;
    // The rebuild is under way until the checkpoint passes the log's last event of now.
    sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = '0', global_position = 0, \
                events_applied = 0, updated_at = now(), (rebuild_tx, rebuild_position) = \
                (SELECT tx_id, global_position FROM events \
                  ORDER BY tx_id DESC, global_position DESC LIMIT 1) \
          WHERE name = $1",
    )
    .bind(projection.name())
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify('herald_events', 'rebuild')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(
        projection = projection.name(),
        "projection reset for rebuild"
    );
    Ok(())
}
