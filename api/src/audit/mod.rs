//! The request log, the audit trail of every API call. The edge middleware hands each finished
//! request to `AuditLog::record` and sends the response only once that returns: a single writer
//! task gathers the records that arrive meanwhile and commits them in one transaction (group
//! commit), extending the hash chain (`chain`) under a lock on its head row, so many requests
//! share one commit and replicas append to one chain in turn.

pub mod chain;

use std::sync::Arc;

use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

pub use chain::Record;

const MAX_BATCH: usize = 1000;

type Pending = (Record, oneshot::Sender<bool>);

pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer; it stops when the last `AuditLog` handle is dropped.
    pub fn start(pool: PgPool) -> Arc<Self> {
        let (queue, incoming) = mpsc::channel(16 * MAX_BATCH);
        tokio::spawn(write_batches(pool, incoming));
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

async fn write_batches(pool: PgPool, mut incoming: mpsc::Receiver<Pending>) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (mut records, acks): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
        let committed = match append(&pool, &mut records).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, count = records.len(), "could not write the request log");
                false
            }
        };
        for ack in acks {
            let _ = ack.send(committed);
        }
    }
}

/// Numbers, chains and inserts `records` in one transaction.
async fn append(pool: &PgPool, records: &mut [Record]) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let (mut seq, mut prev): (i64, String) =
        sqlx::query_as("SELECT last_seq, last_hash FROM request_log_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
    for record in records.iter_mut() {
        seq += 1;
        record.seq = seq;
        record.prev_hash = prev.clone();
        record.hash = chain::hash(&prev, record);
        prev = record.hash.clone();
    }
    let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO request_log (seq, occurred_at, request_id, actor_type, actor_id, project_id, route, \
         method, path, status, latency_us, request_bytes, response_bytes, client_ip, user_agent, outcome, \
         error_code, prev_hash, hash) ",
    );
    insert.push_values(records.iter(), |mut row, r| {
        row.push_bind(r.seq)
            .push_bind(r.occurred_at)
            .push_bind(&r.request_id)
            .push_bind(&r.actor_type)
            .push_bind(&r.actor_id)
            .push_bind(r.project_id)
            .push_bind(&r.route)
            .push_bind(&r.method)
            .push_bind(&r.path)
            .push_bind(r.status)
            .push_bind(r.latency_us)
            .push_bind(r.request_bytes)
            .push_bind(r.response_bytes)
            .push_bind(&r.client_ip)
            .push_bind(&r.user_agent)
            .push_bind(&r.outcome)
            .push_bind(&r.error_code)
            .push_bind(&r.prev_hash)
            .push_bind(&r.hash);
    });
    insert.build().execute(&mut *tx).await?;
    sqlx::query("UPDATE request_log_head SET last_seq = $1, last_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Verifies the chain over the records with `from <= occurred_at < to` (all when absent):
/// the number checked and the first broken link, if any.
pub async fn verify(
    pool: &PgPool,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<(usize, Option<(i64, String)>)> {
    let records: Vec<Record> = sqlx::query_as(
        "SELECT * FROM request_log WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) \
           AND ($2::timestamptz IS NULL OR occurred_at < $2) ORDER BY seq",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let Some(first) = records.first() else {
        return Ok((0, None));
    };
    // The link into the range: the record before it, if it still exists.
    let before: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, hash FROM request_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(first.seq)
    .fetch_optional(pool)
    .await?;
    let (prev_seq, prev_hash) = match (before, from) {
        (Some(before), _) => before,
        // The range starts the log: the chain starts from zeros.
        (None, _) if first.seq == 1 => (0, "0".repeat(64)),
        (None, _) => {
            return Ok((
                records.len(),
                Some((1, "the records before this one are missing".into())),
            ))
        }
    };
    Ok((
        records.len(),
        chain::first_break(prev_hash, prev_seq, &records),
    ))
}
