//! Group commit for single-event appends. Under concurrent load most commands append exactly one
//! event; sending each as its own `INSERT` costs a statement, a transaction and a commit apiece.
//! The appender queues them and writes whatever is waiting as one multi-row
//! `INSERT … ON CONFLICT DO NOTHING RETURNING`: one transaction for the whole batch, and a
//! row the primary key refuses (another writer took that sequence number first) comes back
//! missing, which is that command's optimistic-concurrency conflict, exactly as a lone insert
//! would have reported it. Nobody waits for a batch to fill: a batch is whatever queued while
//! the previous ones were being written, so a lone caller is written at once. Under concurrent
//! load (the last batch held more than one append) the appender yields to the scheduler once
//! before taking a batch, so requests already running can reach their appends and join it; no
//! timer. (Batch sizes were not measured; with the audit trail on, submissions got faster and
//! PostgreSQL's CPU per request fell: docs/PERFORMANCE.md.)

use std::collections::HashSet;
use std::sync::Arc;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// At most this many rows go into one statement.
const MAX_BATCH: usize = 256;
/// Batches written at the same time (each on its own pooled connection).
const IN_FLIGHT: usize = 1;

/// One waiting append and where its outcome goes.
struct Pending {
    aggregate_type: &'static str,
    event: SerializedEvent,
    /// The payload and metadata as JSON text, which PostgreSQL only validates on its way into
    /// the `json` columns (sent as `jsonb`, each document was parsed and printed back out).
    payload: String,
    metadata: String,
    done: oneshot::Sender<Result<(), PersistenceError>>,
}

/// Whether JSON text holds a `\u0000` escape (an odd run of backslashes before the `u`: in
/// `\\u0000` the backslash is itself escaped; raw NUL bytes are not valid JSON at all).
/// PostgreSQL's `json` type stores such text, but `jsonb` (the read models, webhook payloads)
/// refuses it, so an event holding one would stop every projection at it, for good.
pub fn has_nul_escape(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(at, window)| {
        window == b"\\u0000"
            && json[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
    })
}

/// A handle to the batching task; cheap to clone. The task ends when the last handle is dropped,
/// after writing what was queued.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Appender {
    /// Starts the batching task on the current Tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, receiver));
        Self { queue }
    }

    /// Appends one event; `OptimisticLockError` when its sequence number is already taken.
    pub async fn append(
        &self,
        aggregate_type: &'static str,
        event: &SerializedEvent,
    ) -> Result<(), PersistenceError> {
        let payload = event.payload.to_string();
        let metadata = event.metadata.to_string();
        if has_nul_escape(payload.as_bytes()) || has_nul_escape(metadata.as_bytes()) {
            return Err(PersistenceError::UnknownError(
                "an event must not contain the NUL character (\\u0000)".into(),
            ));
        }
        let (done, outcome) = oneshot::channel();
        let pending = Pending {
            aggregate_type,
            event: event.clone(),
            payload,
            metadata,
            done,
        };
        self.queue
            .send(pending)
            .map_err(|_| stopped("the appender has stopped"))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(stopped("the appender dropped an append")))
    }
}

async fn run(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // Whether the last batch held more than one append: then others are on their way.
    let mut busy = false;
    loop {
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let Some(first) = receiver.recv().await else {
            return;
        };
        if busy {
            tokio::task::yield_now().await;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        busy = batch.len() > 1;
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Writes one batch and tells every waiter how its row fared.
async fn write(pool: &PgPool, mut batch: Vec<Pending>) {
    // In key order, so two replicas' batches that share keys take their locks in the same order
    // instead of deadlocking; the sort is stable, so of two appends of one key the first still
    // comes first.
    batch.sort_by(|a, b| {
        (a.aggregate_type, &a.event.aggregate_id, a.event.sequence).cmp(&(
            b.aggregate_type,
            &b.event.aggregate_id,
            b.event.sequence,
        ))
    });
    let outcome = insert(pool, &batch).await;
    match outcome {
        Ok(mut inserted) => {
            for pending in batch {
                let key = key(pending.aggregate_type, &pending.event);
                // Two appends of the same sequence in one batch: the first row is the one
                // PostgreSQL inserted, so the first waiter claims it and the second conflicts.
                let result = if inserted.remove(&key) {
                    Ok(())
                } else {
                    Err(PersistenceError::OptimisticLockError)
                };
                let _ = pending.done.send(result);
            }
        }
        Err(error) => {
            let message = error.to_string();
            for pending in batch {
                let failure = match &error {
                    sqlx::Error::Database(_) => {
                        PersistenceError::UnknownError(message.clone().into())
                    }
                    _ => PersistenceError::ConnectionError(message.clone().into()),
                };
                let _ = pending.done.send(Err(failure));
            }
        }
    }
}

type Key = (String, String, i64);

fn key(aggregate_type: &str, event: &SerializedEvent) -> Key {
    (
        aggregate_type.to_owned(),
        event.aggregate_id.clone(),
        event.sequence as i64,
    )
}

async fn insert(pool: &PgPool, batch: &[Pending]) -> Result<HashSet<Key>, sqlx::Error> {
    let types: Vec<&str> = batch.iter().map(|p| p.aggregate_type).collect();
    let ids: Vec<&str> = batch
        .iter()
        .map(|p| p.event.aggregate_id.as_str())
        .collect();
    let sequences: Vec<i64> = batch.iter().map(|p| p.event.sequence as i64).collect();
    let event_types: Vec<&str> = batch.iter().map(|p| p.event.event_type.as_str()).collect();
    let versions: Vec<&str> = batch
        .iter()
        .map(|p| p.event.event_version.as_str())
        .collect();
    let payloads: Vec<&str> = batch.iter().map(|p| p.payload.as_str()).collect();
    let metadata: Vec<&str> = batch.iter().map(|p| p.metadata.as_str()).collect();
    // Unnested in the select list, not `FROM unnest(…)`: no tuplestore per array.
    let rows: Vec<Key> = sqlx::query_as(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::bigint[]), unnest($4::text[]), \
                unnest($5::text[]), unnest($6::text[]::json[]), unnest($7::text[]::json[]) \
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING \
         RETURNING aggregate_type, aggregate_id, sequence",
    )
    .bind(types)
    .bind(ids)
    .bind(sequences)
    .bind(event_types)
    .bind(versions)
    .bind(payloads)
    .bind(metadata)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

fn stopped(message: &str) -> PersistenceError {
    PersistenceError::ConnectionError(message.into())
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn only_a_real_nul_escape_counts() {
        assert!(has_nul_escape(br#"{"s": "a\u0000b"}"#));
        assert!(has_nul_escape(br#"{"s": "\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"s": "\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"s": "\u0001 and u0000"}"#));
    }
}
