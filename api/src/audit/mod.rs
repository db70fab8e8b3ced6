//! The request log, the audit trail of every API call. The edge middleware hands each finished
//! request to `AuditLog::record` and sends the response only once that returns: a single writer
//! task gathers the records that arrive meanwhile and commits them in one statement (group
//! commit) that also moves the hash chain's head (`chain`) if, and only if, it is still where
//! the writer left it: one round trip per batch, and replicas still append to one chain. The
//! same statement adds the batch to the hourly usage counts (`usage_hourly`), so usage is
//! exactly the log's counts.

pub mod chain;
pub mod export;

use std::sync::Arc;

use sqlx::PgPool;
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
    // The end of the chain as this writer last saw it; re-read when another replica moved it.
    let mut head: Option<(i64, String)> = None;
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (mut records, acks): (Vec<Record>, Vec<_>) = batch.into_iter().unzip();
        let committed = match append(&pool, &mut head, &mut records).await {
            Ok(()) => true,
            Err(error) => {
                head = None;
                tracing::error!(%error, count = records.len(), "could not write the request log");
                false
            }
        };
        for ack in acks {
            let _ = ack.send(committed);
        }
    }
}

/// Numbers, chains and inserts `records` in one statement: the insert happens only if the
/// chain's head is still where this writer believes it is (it moves the head in the same
/// statement), otherwise the head is read again and the batch re-chained.
async fn append(
    pool: &PgPool,
    head: &mut Option<(i64, String)>,
    records: &mut [Record],
) -> sqlx::Result<()> {
    for _ in 0..100 {
        let (start_seq, start_hash) = match head.take() {
            Some(known) => known,
            None => {
                sqlx::query_as("SELECT last_seq, last_hash FROM request_log_head WHERE id = 1")
                    .fetch_one(pool)
                    .await?
            }
        };
        let (mut seq, mut prev) = (start_seq, start_hash.clone());
        for record in records.iter_mut() {
            seq += 1;
            record.seq = seq;
            record.prev_hash = prev.clone();
            record.hash = chain::hash(&prev, record);
            prev = record.hash.clone();
        }
        // One fixed statement (prepared once, whatever the batch size), one array per column.
        let col = |f: fn(&Record) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
        let inserted: i64 = sqlx::query_scalar(
            "WITH head AS (UPDATE request_log_head SET last_seq = $1, last_hash = $2 \
                            WHERE id = 1 AND last_seq = $3 AND last_hash = $4 RETURNING 1), \
             logged AS (INSERT INTO request_log (seq, occurred_at, request_id, actor_type, actor_id, project_id, \
               route, method, path, status, latency_us, request_bytes, response_bytes, client_ip, user_agent, \
               outcome, error_code, prev_hash, hash) \
             SELECT r.* FROM head, UNNEST($5::bigint[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], \
               $10::uuid[], $11::text[], $12::text[], $13::text[], $14::int[], $15::bigint[], $16::bigint[], \
               $17::bigint[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[]) AS r \
             RETURNING occurred_at, actor_type, actor_id, project_id, route, method, status), \
             usage AS (INSERT INTO usage_hourly \
               SELECT date_trunc('hour', occurred_at, 'UTC'), actor_type, actor_id, project_id, route, method, \
                      (status / 100)::text || 'xx', count(*) FROM logged GROUP BY 1, 2, 3, 4, 5, 6, 7 \
               ON CONFLICT (hour, actor_type, actor_id, project_id, route, method, status_class) \
               DO UPDATE SET requests = usage_hourly.requests + excluded.requests) \
             SELECT count(*) FROM logged",
        )
        .bind(seq)
        .bind(&prev)
        .bind(start_seq)
        .bind(&start_hash)
        .bind(records.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(col(|r| Some(r.request_id.clone())))
        .bind(col(|r| r.actor_type.clone()))
        .bind(col(|r| r.actor_id.clone()))
        .bind(records.iter().map(|r| r.project_id).collect::<Vec<_>>())
        .bind(col(|r| Some(r.route.clone())))
        .bind(col(|r| Some(r.method.clone())))
        .bind(col(|r| Some(r.path.clone())))
        .bind(records.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.latency_us).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.request_bytes).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.response_bytes).collect::<Vec<_>>())
        .bind(col(|r| r.client_ip.clone()))
        .bind(col(|r| r.user_agent.clone()))
        .bind(col(|r| Some(r.outcome.clone())))
        .bind(col(|r| r.error_code.clone()))
        .bind(col(|r| Some(r.prev_hash.clone())))
        .bind(col(|r| Some(r.hash.clone())))
        .fetch_one(pool)
        .await?;
        if inserted == records.len() as i64 {
            *head = Some((seq, prev));
            return Ok(());
        }
        // Another replica appended since: chain again from the new head.
    }
    Err(sqlx::Error::Protocol(
        "the request log's head kept moving".into(),
    ))
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
    // The link into the range: the record before it, if it still exists, or the anchor that
    // retention left when it pruned that record.
    let before: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, hash FROM (SELECT seq, hash FROM request_log WHERE seq < $1 \
                                UNION ALL SELECT seq, hash FROM request_log_anchor WHERE seq < $1) b \
          ORDER BY seq DESC LIMIT 1",
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

/// Retention: removes the records up to the last one that occurred before `cutoff` (a prefix of
/// the chain, in chunks), leaving that record's sequence number and hash as the anchor the
/// chain is verified from. Returns how many records were removed.
pub async fn prune(pool: &PgPool, cutoff: chrono::DateTime<chrono::Utc>) -> sqlx::Result<u64> {
    let mut removed = 0;
    loop {
        let deleted = sqlx::query(
            "WITH last AS (SELECT max(seq) AS seq FROM request_log WHERE occurred_at < $1), \
                  doomed AS (SELECT r.seq, r.hash FROM request_log r, last WHERE r.seq <= last.seq \
                              ORDER BY r.seq LIMIT 10000), \
                  newest AS (SELECT seq, hash FROM doomed ORDER BY seq DESC LIMIT 1), \
                  anchor AS (INSERT INTO request_log_anchor (id, seq, hash) SELECT 1, seq, hash FROM newest \
                             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash \
                             WHERE request_log_anchor.seq < excluded.seq) \
             DELETE FROM request_log WHERE seq IN (SELECT seq FROM doomed)",
        )
        .bind(cutoff)
        .execute(pool)
        .await?
        .rows_affected();
        removed += deleted;
        if deleted < 10_000 {
            return Ok(removed);
        }
    }
}

/// Prunes records older than `retention` now and then every hour, until cancelled.
pub async fn prune_periodically(
    pool: PgPool,
    retention: chrono::Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        match prune(&pool, chrono::Utc::now() - retention).await {
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
