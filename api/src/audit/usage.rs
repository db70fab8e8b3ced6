//! Usage counts (`usage_hourly`): the request log counted per hour, caller, project, route,
//! method and status class. Counting is kept off the path every response waits for: a
//! background task adds the records after `usage_checkpoint` and moves the checkpoint in the
//! same transaction, so each record is counted exactly once, whichever replica counts it. Usage
//! reads add the records not counted yet (`herald_projections::usage`), and retention prunes
//! only counted records, so the counts stay exactly the log's.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The most records one transaction counts.
const MAX_COUNTED: i64 = 50_000;

/// Counts the records logged since the last count; returns how many it counted.
///
/// Records become visible in `seq` order (each batch is chained onto a committed record), so
/// none can appear later behind the checkpoint.
pub async fn count(pool: &PgPool) -> sqlx::Result<u64> {
    let mut counted = 0;
    loop {
        let mut tx = pool.begin().await?;
        // Locked, so two replicas counting at once take turns instead of counting twice.
        let after: i64 =
            sqlx::query_scalar("SELECT seq FROM usage_checkpoint WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        let (last, n): (Option<i64>, i64) = sqlx::query_as(
            "WITH batch AS (SELECT * FROM request_log WHERE seq > $1 ORDER BY seq LIMIT $2), \
                  counts AS (INSERT INTO usage_hourly \
                     SELECT date_trunc('hour', occurred_at, 'UTC'), actor_type, actor_id, project_id, \
                            route, method, (status / 100)::text || 'xx', count(*) \
                       FROM batch GROUP BY 1, 2, 3, 4, 5, 6, 7 \
                     ON CONFLICT (hour, actor_type, actor_id, project_id, route, method, status_class) \
                     DO UPDATE SET requests = usage_hourly.requests + excluded.requests) \
             SELECT max(seq), count(*) FROM batch",
        )
        .bind(after)
        .bind(MAX_COUNTED)
        .fetch_one(&mut *tx)
        .await?;
        let Some(last) = last else {
            return Ok(counted);
        };
        sqlx::query("UPDATE usage_checkpoint SET seq = $1 WHERE id = 1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        counted += n as u64;
        if n < MAX_COUNTED {
            return Ok(counted);
        }
    }
}

/// Counts every `interval` until cancelled.
pub async fn count_periodically(pool: PgPool, interval: Duration, cancel: CancellationToken) {
    loop {
        if let Err(error) = count(&pool).await {
            tracing::warn!(%error, "could not count usage");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
