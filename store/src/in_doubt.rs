//! Appends whose statement's answer never arrived. When a connection breaks, or a statement's
//! answer comes later than its caller waits, PostgreSQL may have committed the batch before the
//! answer was lost. Failing its appends then would answer an error for a command whose event is
//! in the log, and a client that retries after that error would do it twice (a 5xx is not kept
//! for an `Idempotency-Key`). So such a batch is written again on another connection, by the
//! same statement: a row the lost statement committed is skipped by `ON CONFLICT DO NOTHING`
//! (and while that statement is still running, the new one waits for it to end), so nothing
//! goes in twice. The rows not inserted then are looked up: one whose stored payload and
//! metadata are exactly the append's (the `json` columns keep the text as it was sent) was
//! written by the lost statement, so that append succeeded; any other lost its sequence number
//! to another writer, as it would have the first time.

use sqlx::PgConnection;

use crate::event_batch::{EventBatch, EventKey};

/// Whether `error` leaves a statement in doubt: any failure but an answer from the database
/// (a statement the database answers with an error did not commit) or a connection that was
/// never handed out (nothing was sent).
pub fn answer_lost(error: &sqlx::Error) -> bool {
    !matches!(
        error,
        sqlx::Error::Database(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Configuration(_)
    )
}

/// The batch's rows that are stored with exactly the payload and metadata it carries.
const STORED: &str = "SELECT e.aggregate_type, e.aggregate_id, e.sequence \
       FROM events e \
       JOIN (SELECT unnest($1::text[]) AS t, unnest($2::text[]) AS id, unnest($3::bigint[]) AS s, \
                    unnest($4::text[]) AS p, unnest($5::text[]) AS m) b \
         ON e.aggregate_type = b.t AND e.aggregate_id = b.id AND e.sequence = b.s \
      WHERE e.payload::text = b.p AND e.metadata::text = b.m";

impl EventBatch {
    /// Writes again a batch whose first statement's answer was lost, on `conn` (another
    /// connection), and answers every append: succeeded if its row is in the log now, whichever
    /// statement wrote it. The error, if this failed too (every append was failed with it).
    pub async fn rewrite(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let mut keys = match self.insert(&mut *conn).await {
            Ok(keys) => keys,
            Err(error) => {
                self.fail(&error);
                return Err(error);
            }
        };
        let appends = &self.0;
        let stored = sqlx::query_as::<_, EventKey>(STORED)
            .bind(appends.iter().map(|p| p.aggregate_type).collect::<Vec<_>>())
            .bind(
                appends
                    .iter()
                    .map(|p| p.event.aggregate_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                appends
                    .iter()
                    .map(|p| p.event.sequence as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(
                appends
                    .iter()
                    .map(|p| p.payload.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                appends
                    .iter()
                    .map(|p| p.metadata.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await;
        match stored {
            Ok(ours) => {
                // A row inserted just now is also found stored: `settle` counts a key once.
                keys.extend(ours);
                self.settle(keys);
                Ok(())
            }
            // What was inserted just now went in; the rest cannot be told.
            Err(error) => {
                self.settle_partly(keys, &error);
                Err(error)
            }
        }
    }
}
