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
mod witness;
mod writer;

use std::sync::Arc;

use herald_projections::usage_count;
use herald_store::EventQueue;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

pub use chain::{Record, CHAIN_FORMAT};
pub use key::ChainKey;
pub use verify::{newest_under_other_key, verify, verify_with, Verified};
pub use witness::Witness;
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
/// the chain is verified from, sealed under `key` (`ChainKey::seal_anchor`). The run ends at
/// the first record still within retention, so a record stamped in the past by a replica whose
/// clock was behind, written after recent ones, waits for them instead of taking them with it.
/// Records are counted into usage first, and only counted ones go. The periodic task takes
/// `cutoff` from the database's clock. Returns how many records were removed.
pub async fn prune(
    pool: &PgPool,
    key: &ChainKey,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
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
    // In chunks, each starting after the last one's end (not over what it deleted): the
    // chunk's last record becomes the anchor, and the chunk goes, in one transaction.
    let (mut removed, mut after) = (0, 0);
    loop {
        let mut chunk = pool.begin().await?;
        let newest: Option<(i64, String, bool)> = sqlx::query_as(
            "SELECT seq, hash, chain_format >= $3 FROM (SELECT seq, hash, chain_format \
               FROM request_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT 10000) doomed \
              ORDER BY seq DESC LIMIT 1",
        )
        .bind(after)
        .bind(last)
        .bind(chain::KEYED_FORMAT)
        .fetch_optional(&mut *chunk)
        .await?;
        let Some((newest, hash, keyed)) = newest else {
            return Ok(removed);
        };
        sqlx::query(
            "INSERT INTO request_log_anchor (id, seq, hash, keyed, seal) VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                 keyed = excluded.keyed, seal = excluded.seal \
             WHERE request_log_anchor.seq < excluded.seq",
        )
        .bind(newest)
        .bind(&hash)
        .bind(keyed)
        .bind(key.seal_anchor(newest, &hash, keyed))
        .execute(&mut *chunk)
        .await?;
        let deleted = sqlx::query("DELETE FROM request_log WHERE seq > $1 AND seq <= $2")
            .bind(after)
            .bind(newest)
            .execute(&mut *chunk)
            .await?
            .rows_affected();
        chunk.commit().await?;
        removed += deleted;
        after = newest;
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
    key: ChainKey,
    retention: chrono::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let pruned = match cutoff(&pool, retention).await {
            Ok(cutoff) => prune(&pool, &key, cutoff).await,
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
