//! Retention: the request log's oldest records are removed, always a prefix of the chain, and
//! the last one removed stays as the anchor the chain is verified from, sealed under the chain
//! key (`ChainKey::seal_anchor`). Only records found intact are removed: each chunk is checked
//! from the anchor (or the chain's start) before it goes, so records deleted or edited by hand
//! at the log's start, or backdated so that they look old enough, are never sealed over; the
//! chain's break stays where verification reports it.

use sqlx::PgPool;

use super::chain::{self, Link, KEYED_FORMAT};
use super::verify::anchor_link;
use super::{ChainKey, Record};
use herald_projections::usage_count;

/// Records removed per transaction.
const CHUNK: i64 = 10_000;

/// The advisory lock each chunk's transaction takes ("prune" in ASCII): replicas pruning at
/// once (they all prune when they start) take turns, so none reads the anchor before another
/// moves it and the records after the move, which would look like records missing from the
/// chain.
pub const PRUNING_LOCK: i64 = 0x0070_7275_6e65;

/// Why pruning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The records it would have removed are not intact: nothing from there on was removed.
    #[error("the chain is broken at record {seq}: {reason}; `herald audit verify` reports it")]
    Broken { seq: i64, reason: String },
}

/// Removes the log's leading run of records that occurred before `cutoff` (a prefix of the
/// chain, in chunks of `CHUNK`), leaving its last record's sequence number and hash as the
/// sealed anchor. The run ends at the first record still within retention, so a record stamped
/// in the past by a replica whose clock was behind, written after recent ones, waits for them
/// instead of taking them with it. Records are counted into usage first, and only counted ones
/// go. The periodic task takes `cutoff` from the database's clock. Returns how many records
/// were removed; `Broken` (after removing the intact chunks before it) when the chain is.
pub async fn prune(
    pool: &PgPool,
    key: &ChainKey,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64, PruneError> {
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
    let mut removed = 0;
    loop {
        // Each chunk in a transaction of its own: checked from the anchor, which then moves to
        // the chunk's last record, and the chunk goes.
        let mut chunk = pool.begin().await?;
        // Each statement's own snapshot, whatever the database's default isolation: the reads
        // below must see what a replica that held the lock before committed.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .execute(&mut *chunk)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PRUNING_LOCK)
            .execute(&mut *chunk)
            .await?;
        let mut at = match anchor_link(&mut chunk, key).await? {
            Ok(anchor) => anchor.unwrap_or_else(Link::start),
            Err((seq, reason)) => return Err(PruneError::Broken { seq, reason }),
        };
        let records: Vec<Record> = sqlx::query_as(
            "SELECT * FROM request_log WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(at.seq)
        .bind(last)
        .bind(CHUNK)
        .fetch_all(&mut *chunk)
        .await?;
        if records.is_empty() {
            return Ok(removed);
        }
        if let Some((seq, reason)) = chain::first_break(key, &mut at, &records) {
            return Err(PruneError::Broken { seq, reason });
        }
        let keyed = records
            .last()
            .is_some_and(|r| r.chain_format >= KEYED_FORMAT);
        sqlx::query(
            "INSERT INTO request_log_anchor (id, seq, hash, keyed, seal) VALUES (1, $1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                 keyed = excluded.keyed, seal = excluded.seal \
             WHERE request_log_anchor.seq < excluded.seq",
        )
        .bind(at.seq)
        .bind(&at.hash)
        .bind(keyed)
        .bind(key.seal_anchor(at.seq, &at.hash, keyed))
        .execute(&mut *chunk)
        .await?;
        let deleted = sqlx::query("DELETE FROM request_log WHERE seq <= $1")
            .bind(at.seq)
            .execute(&mut *chunk)
            .await?
            .rows_affected();
        chunk.commit().await?;
        removed += deleted;
    }
}
