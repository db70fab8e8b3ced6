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
mod in_doubt;
pub mod key;
mod list;
mod retention;
mod verify;
mod witness;
mod writer;

use std::sync::Arc;

use herald_store::EventQueue;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

pub use chain::{Record, CHAIN_FORMAT};
pub use key::ChainKey;
pub use retention::{prune, PruneError, PRUNING_LOCK};
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

pub use list::{walk, Resume, Walk, LIST_SQL, RANGE_SQL};

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
            Err(error) => Err(error.into()),
        };
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, "pruned the request log"),
            Err(error @ PruneError::Broken { .. }) => {
                tracing::error!(%error, "not pruning the request log")
            }
            Err(error) => tracing::warn!(%error, "could not prune the request log"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}
