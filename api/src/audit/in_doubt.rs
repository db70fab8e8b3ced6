//! Statements of the writer whose answer was lost: the connection broke, or the answer came
//! later than the writer waits (`writer::within`). Such a statement may have committed, so its
//! callers must not simply be told it failed: a command would answer an error while its event
//! is in the log (and a client retrying after a 5xx would do it twice), and a request would
//! answer 503 while its record says it succeeded.
//!
//! So the writer first makes sure the statement is over: on a new connection it ends the
//! backend that ran it, if that backend is still there, and waits for it to exit (`end_orphan`;
//! the backend is known by its process id and start time, so a process id used again is never
//! taken for it). Only then is nothing of the statement able to commit any more, and what is in
//! the logs final: records are in the request log if their sequence numbers and hashes are
//! (`records_stored`; a hash covers the record and everything before it), and a batch of events
//! is written again, which inserts only what is missing and recognises what the lost statement
//! wrote (`herald_store::EventBatch::rewrite`). When the backend cannot be ended (no connection,
//! it did not exit within `END_WAIT_MS`, a PostgreSQL before 14), the writer cannot know, and
//! fails the statement's callers as before; it tries once, so an outage costs one connection
//! attempt, not several.

use chrono::{DateTime, Utc};
use herald_store::EventBatch;
use sqlx::PgConnection;

use super::writer::{within, Db};
use super::Record;

/// A backend of the database: its process id and when it started.
pub(super) type Backend = (i32, DateTime<Utc>);

/// How long ending a backend may take before the writer gives up knowing what it did.
const END_WAIT_MS: i64 = 5_000;

/// Whether the backend of the connection given up with a statement's answer lost is gone, so
/// what that statement did is final; false when that cannot be made sure, and when there is
/// none (the statement failed before it was sent: it did nothing, and its callers are told so).
pub(super) async fn end_orphan(db: &mut Db) -> bool {
    let Some(orphan) = db.take_orphan() else {
        return false;
    };
    let ended = match db.conn().await {
        Ok(conn) => end_backend(conn, &orphan).await,
        Err(error) => Err(error),
    };
    match ended {
        Ok(ended) => ended,
        Err(error) => {
            db.failed(
                &error,
                "could not end the backend of a statement whose answer was lost",
            );
            false
        }
    }
}

/// Ends `backend` if it is still running, and waits (up to `END_WAIT_MS`) for it to exit, so its
/// transaction is over: committed or rolled back, for good. False when it did not exit in time.
async fn end_backend(conn: &mut PgConnection, backend: &Backend) -> sqlx::Result<bool> {
    let ended: Option<bool> = within(
        sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity \
              WHERE pid = $1 AND backend_start = $2",
        )
        .bind(backend.0)
        .bind(backend.1)
        .bind(END_WAIT_MS)
        .fetch_optional(&mut *conn),
    )
    .await?;
    match ended {
        None => tracing::info!(
            pid = backend.0,
            "the lost statement's backend had already ended"
        ),
        Some(true) => tracing::warn!(pid = backend.0, "ended the lost statement's backend"),
        Some(false) => tracing::error!(pid = backend.0, "the lost statement's backend did not end"),
    }
    Ok(ended != Some(false))
}

/// Whether every one of `records`, as last chained, is in the request log: the answer to a
/// statement that wrote them and whose answer was lost. False when that cannot be read.
pub(super) async fn records_stored(db: &mut Db, records: &[Record]) -> bool {
    let found = async {
        let conn = db.conn().await?;
        within(
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM request_log r \
                   JOIN (SELECT unnest($1::bigint[]) AS seq, unnest($2::text[]) AS hash) b \
                     ON r.seq = b.seq AND r.hash = b.hash",
            )
            .bind(records.iter().map(|r| r.seq).collect::<Vec<_>>())
            .bind(records.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>())
            .fetch_one(conn),
        )
        .await
    }
    .await;
    match found {
        Ok(found) => {
            tracing::warn!(found, of = records.len(), "records whose answer was lost");
            found == records.len() as i64
        }
        Err(error) => {
            db.failed(&error, "could not look for records whose answer was lost");
            false
        }
    }
}

/// Writes again, on a new connection, a batch of events whose statement's answer was lost,
/// and answers its appends.
pub(super) async fn rewrite_events(db: &mut Db, batch: EventBatch) {
    let written = match db.conn().await {
        Ok(conn) => within(batch.rewrite(conn)).await,
        Err(error) => {
            batch.fail(&error);
            Err(error)
        }
    };
    if let Err(error) = written {
        db.failed(
            &error,
            "could not write again a batch of events whose answer was lost",
        );
    }
}
