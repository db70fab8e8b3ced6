//! The request log, the audit trail of every API call. The edge middleware hands each finished
//! request to `AuditLog::record` and sends the response only once that returns: a single writer
//! (`writer`, a task with a connection of its own) gathers the records that arrive meanwhile
//! and commits them in one statement (group commit), chained (`chain`) onto the log's last
//! record and inserted only while the log still ends there: one round trip per batch, and
//! replicas still append to one chain. Usage counts are kept from the log by a background task,
//! off that path (`herald_projections::usage_count`); `verify` recomputes the chain.

mod batches;
pub mod chain;
pub mod export;
pub mod key;
mod list;
mod verify;
mod writer;

use std::sync::Arc;

use herald_projections::usage_count;
use herald_store::EventQueue;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

pub use chain::{Record, CHAIN_FORMAT};
pub use key::ChainKey;
pub use verify::{newest_under_other_key, verify, verify_with, Verified, Witness};
pub use writer::connect as writer_connection;

const MAX_BATCH: usize = 1000;

type Pending = (Record, oneshot::Sender<bool>);

pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer on the current runtime, chaining records under `key`; it stops when
    /// the last `AuditLog` handle is dropped.
    /// With `events`, the writer also appends the server's events, each batch in the same
    /// statement as the records waiting with it (one commit for both logs).
    pub fn start(pool: PgPool, key: ChainKey, events: Option<EventQueue>) -> Arc<Self> {
        let (queue, incoming) = mpsc::channel(16 * MAX_BATCH);
        batches::spawn(pool, key, incoming, events);
        Arc::new(Self { queue })
    }

    /// Returns once `record` is committed (true), or when it could not be (false).
    pub async fn record(&self, record: Record) -> bool {
        let (done, committed) = oneshot::channel();
        if self.queue.send((record, done)).await.is_err() {
            return false;
        }
        committed.await.unwrap_or(false)
    }
}

pub use list::{list_sql, LIST_SQL, WINDOW_ROWS, WINDOW_SQL};

/// Retention: removes the log's leading run of records that occurred before `cutoff` (a prefix
/// of the chain, in chunks), leaving its last record's sequence number and hash as the anchor
/// the chain is verified from. The run ends at the first record still within retention, so a
/// record stamped in the past by a replica whose clock was behind, written after recent ones,
/// waits for them instead of taking them with it. Records are counted into usage first, and
/// only counted ones go. The periodic task takes `cutoff` from the database's clock.
/// Returns how many records were removed.
pub async fn prune(pool: &PgPool, cutoff: chrono::DateTime<chrono::Utc>) -> sqlx::Result<u64> {
    usage_count::count(pool).await?;
    let (counted, first_kept): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT seq FROM usage_checkpoint), \
                (SELECT seq FROM request_log WHERE occurred_at >= $1 ORDER BY seq LIMIT 1)",
    )
    .bind(cutoff)
    .fetch_one(pool)
    .await?;
    let Some(counted) = counted else {
        return Ok(0);
    };
    let last = first_kept.map_or(counted, |kept| counted.min(kept - 1));
    // In chunks, each starting after the last one's end (not over what it deleted).
    let (mut removed, mut after) = (0, 0);
    loop {
        let (deleted, newest): (i64, Option<i64>) = sqlx::query_as(
            "WITH doomed AS (SELECT seq, hash FROM request_log WHERE seq > $1 AND seq <= $2 \
                              ORDER BY seq LIMIT 10000), \
                  newest AS (SELECT seq, hash FROM doomed ORDER BY seq DESC LIMIT 1), \
                  anchor AS (INSERT INTO request_log_anchor (id, seq, hash) SELECT 1, seq, hash FROM newest \
                             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
                             WHERE request_log_anchor.seq < excluded.seq), \
                  gone AS (DELETE FROM request_log WHERE seq IN (SELECT seq FROM doomed) RETURNING seq) \
             SELECT count(*), max(seq) FROM gone",
        )
        .bind(after)
        .bind(last)
        .fetch_one(pool)
        .await?;
        removed += deleted as u64;
        match newest {
            Some(newest) if deleted == 10_000 => after = newest,
            _ => return Ok(removed),
        }
    }
}

/// The cutoff for `retention`, by the database's clock: one replica whose clock runs ahead
/// must not prune records the others still keep.
async fn cutoff(
    pool: &PgPool,
    retention: chrono::Duration,
) -> sqlx::Result<chrono::DateTime<chrono::Utc>> {
    let now: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    Ok(now - retention)
}

/// Prunes records older than `retention` now and then every hour, until cancelled.
pub async fn prune_periodically(
    pool: PgPool,
    retention: chrono::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let pruned = match cutoff(&pool, retention).await {
            Ok(cutoff) => prune(&pool, cutoff).await,
            Err(error) => Err(error),
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "pruned the request log"),
            Err(error) => tracing::warn!(%error, "could not prune the request log"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
