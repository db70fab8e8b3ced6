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

/// The advisory lock that serializes counting across replicas ("usage" in ASCII).
pub const COUNTING_LOCK: i64 = 0x0075_7361_6765;

/// Counts the records logged since the last count; returns how many it counted.
///
/// Records become visible in `seq` order (each batch is chained onto a committed record), so
/// none can appear later behind the checkpoint.
pub async fn count(pool: &PgPool) -> sqlx::Result<u64> {
    let mut counted = 0;
    loop {
        let mut tx = pool.begin().await?;
        // Replicas counting at once take turns. An advisory lock rather than a row lock: a row
        // lock takes a transaction id at once, and an open transaction id holds back every
        // projection's horizon (the whole cluster's) for as long as the count reads the log;
        // this transaction takes one only when it writes the counts.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COUNTING_LOCK)
            .execute(&mut *tx)
            .await?;
        let after: i64 = sqlx::query_scalar("SELECT seq FROM usage_checkpoint WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        // Records after the checkpoint have no gaps (retention prunes only counted ones), so
        // the next batch is a range of sequence numbers.
        let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM request_log")
            .fetch_one(&mut *tx)
            .await?;
        let last = match last {
            Some(last) if last > after => last.min(after + MAX_COUNTED),
            _ => return Ok(counted),
        };
        sqlx::query(
            "INSERT INTO usage_hourly \
             SELECT date_trunc('hour', occurred_at, 'UTC'), actor_type, actor_id, project_id, route, \
                    method, CASE WHEN outcome = 'replayed' THEN 'replayed' \
                                 ELSE (status / 100)::text || 'xx' END, count(*) \
               FROM request_log WHERE seq > $1 AND seq <= $2 GROUP BY 1, 2, 3, 4, 5, 6, 7 \
             ON CONFLICT (hour, actor_type, actor_id, project_id, route, method, status_class) \
             DO UPDATE SET requests = usage_hourly.requests + excluded.requests",
        )
        .bind(after)
        .bind(last)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE usage_checkpoint SET seq = $1 WHERE id = 1")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        counted += (last - after) as u64;
        if last - after < MAX_COUNTED {
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
