//! Group commit for single-event appends. Under concurrent load most commands append exactly one
//! event; sending each as its own `INSERT` costs a statement, a transaction and a commit apiece.
//! The `Appender` queues them (`event_batch::EventQueue`) and a writer takes whatever is waiting
//! as one batch, written in one statement and one transaction. Nobody waits for a batch to
//! fill: a batch is whatever queued while the previous ones were being written, so a lone
//! caller is written at once. Under concurrent load (the last batch held more than one append)
//! the writer yields to the scheduler once before taking a batch, so requests already running
//! can reach their appends and join it; no timer.
//!
//! The writer is the appender's own task (`Appender::start`), or, with the audit trail on, the
//! request log's writer (`Appender::detached`), which commits each event batch together with
//! the request records waiting at the same time (docs/PERFORMANCE.md, twenty-first section).
//! Either writer writes a batch again when its statement's answer was lost (`in_doubt`).

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::event_batch::{project_of, EventBatch, EventQueue, Pending};
use crate::in_doubt::answer_lost;

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

/// A handle to the queue of appends; cheap to clone. The writer stops once the last handle is
/// dropped, after writing what was queued.
#[derive(Clone)]
pub struct Appender {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Appender {
    /// Starts the appender's own writer on the current Tokio runtime, on `pool`'s connections.
    pub fn start(pool: PgPool) -> Self {
        let (appender, mut queue) = Self::detached();
        tokio::spawn(async move {
            // Whether the last batch held more than one append: then others are on their way.
            let mut busy = false;
            while let Some(mut batch) = queue.next_batch(busy).await {
                busy = batch.len() > 1;
                batch.sort();
                write(&pool, batch).await;
            }
        });
        appender
    }

    /// An appender whose queue the caller writes (`EventQueue::next_batch`, `EventBatch`).
    pub fn detached() -> (Self, EventQueue) {
        let (queue, receiver) = mpsc::unbounded_channel();
        (Self { queue }, EventQueue { receiver })
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
            project_id: project_of(aggregate_type, event),
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

/// Writes a batch on the pool's connections and answers its appends; a batch whose answer was
/// lost is written again on another connection (`in_doubt`).
async fn write(pool: &PgPool, batch: EventBatch) {
    let error = match batch.insert(pool).await {
        Ok(keys) => return batch.settle(keys),
        Err(error) => error,
    };
    if !answer_lost(&error) {
        tracing::warn!(%error, "could not append a batch of events");
        return batch.fail(&error);
    }
    tracing::warn!(%error, "a batch of events is in doubt: writing it again");
    let rewritten = match pool.acquire().await {
        Ok(mut conn) => batch.rewrite(&mut conn).await,
        Err(error) => {
            batch.fail(&error);
            Err(error)
        }
    };
    if let Err(error) = rewritten {
        tracing::warn!(%error, "could not append a batch of events");
    }
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
