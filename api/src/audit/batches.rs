//! The writer's loop: one task takes the records of finished requests and, when the server's
//! event appends are handed to it (`AuditLog::start` with an `EventQueue`), the appends as
//! well, and writes whatever queued meanwhile as one statement: records and events waiting at
//! the same time share one transaction and one commit, instead of a commit for each log
//! (docs/PERFORMANCE.md, twenty-first section). Records still commit before their responses
//! leave; an append still learns whether its row went in.
//!
//! Nobody waits for a batch to fill: a batch is whatever queued while the previous one was
//! written, so a lone caller is written at once. Under concurrent load (the last batch held
//! more than one record or append) the writer yields to the scheduler once before taking a
//! batch, so requests already running can finish and join it; no timer (a timed wait was
//! measured slower at 32 connections). One batch is written at a time: two in flight were
//! measured slower on a CPU-bound 2-core machine, since they halve the batch size.

use herald_store::{answer_lost, EventBatch, EventQueue};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::in_doubt;
use super::writer::{self, append, link, stored_head, within, Db, Head};
use super::{ChainKey, Pending, Record, MAX_BATCH};

/// Starts the writer on the current runtime, chaining records under `key`; it ends when every
/// sender of `incoming` and every handle of the `events` queue's appender are gone.
pub(super) fn spawn(
    pool: PgPool,
    key: ChainKey,
    incoming: mpsc::Receiver<Pending>,
    events: Option<EventQueue>,
) {
    let db = Db::new(pool, key);
    tokio::spawn(write_batches(db, incoming, events));
}

async fn write_batches(
    mut db: Db,
    mut incoming: mpsc::Receiver<Pending>,
    mut events: Option<EventQueue>,
) {
    // Where the chain ends, as this writer last left it; `None`: read it from the database.
    let mut head: Option<Head> = None;
    // Whether the last batch held more than one record or append: requests are arriving.
    let mut busy = false;
    let mut records_open = true;
    loop {
        let mut pending = Vec::new();
        let mut batch = None;
        tokio::select! {
            biased;
            first = incoming.recv(), if records_open => match first {
                Some(first) => pending.push(first),
                None => records_open = false,
            },
            first = async { events.as_mut().expect("checked").wait().await }, if events.is_some() => {
                match first {
                    Some(first) => batch = Some(first),
                    None => events = None,
                }
            },
            else => return,
        }
        if pending.is_empty() && batch.is_none() {
            continue;
        }
        if busy {
            tokio::task::yield_now().await;
        }
        while pending.len() < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        if let Some(queue) = events.as_mut() {
            match batch.as_mut() {
                Some(batch) => queue.top_up(batch),
                None => batch = queue.try_batch(),
            }
        }
        busy = pending.len() > 1 || batch.as_ref().is_some_and(|b| b.len() > 1);
        let (mut records, acks): (Vec<Record>, Vec<oneshot::Sender<bool>>) =
            pending.into_iter().unzip();
        let committed = match batch {
            Some(batch) => write_events(&mut db, batch, &mut records, &mut head).await,
            None => append(&mut db, &mut records, &mut head).await,
        };
        for ack in acks {
            let _ = ack.send(committed);
        }
    }
}

/// Writes an event batch together with `records` (which may be none); returns whether the
/// records were committed.
async fn write_events(
    db: &mut Db,
    mut batch: EventBatch,
    records: &mut [Record],
    head: &mut Option<Head>,
) -> bool {
    batch.sort();
    if records.is_empty() {
        events_alone(db, batch).await;
        return true;
    }
    match together(db, batch, records, head).await {
        Ok(Together::Both) => true,
        // The events went in; the log had moved on, so the records are chained again alone.
        Ok(Together::EventsOnly) => append(db, records, head).await,
        // Refused as a whole (another replica took the same positions, or a deadlock with
        // one): nothing committed, so each log is written on its own.
        Err((batch, sqlx::Error::Database(error))) if contended(&*error) => {
            tracing::debug!(%error, "writing events and records separately");
            events_alone(db, batch).await;
            *head = None;
            append(db, records, head).await
        }
        // Refused for another reason (the statement ran out of time, the connection was ended):
        // nothing committed. The records fail at once, as they would alone, so their answers
        // are not held back further; the events get a statement of their own on a fresh
        // connection, since their part may not be what failed.
        Err((batch, error @ sqlx::Error::Database(_))) => {
            db.failed(&error, "could not write the request log");
            events_alone(db, batch).await;
            false
        }
        // The answer was lost (the connection broke, or it came too late): the statement may
        // have committed both parts. Once its backend is gone, the logs say which.
        Err((batch, error)) => {
            db.failed(&error, "could not write the request log");
            if !in_doubt::end_orphan(db).await {
                batch.fail(&error);
                return false;
            }
            let committed = in_doubt::records_stored(db, records).await;
            in_doubt::rewrite_events(db, batch).await;
            if committed {
                *head = records.last().map(|r| (r.seq, r.hash.clone()));
            }
            committed
        }
    }
}

/// Whether a statement was refused for running into another writer: the primary key of either
/// log taken by a concurrent statement (`unique_violation`), or a deadlock with one. Chaining
/// the records again is the answer to these, and to nothing else.
fn contended(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.is_unique_violation() || error.code().as_deref() == Some("40P01")
}

/// Writes an event batch in a statement of its own on the writer's connection; when its
/// answer is lost, writes it again on a new one (`in_doubt`).
async fn events_alone(db: &mut Db, batch: EventBatch) {
    let conn = match db.conn().await {
        Ok(conn) => conn,
        Err(error) => {
            db.failed(&error, "could not append a batch of events");
            return batch.fail(&error);
        }
    };
    let error = match within(batch.insert(conn)).await {
        Ok(keys) => return batch.settle(keys),
        Err(error) => error,
    };
    db.failed(&error, "could not append a batch of events");
    if answer_lost(&error) && in_doubt::end_orphan(db).await {
        in_doubt::rewrite_events(db, batch).await;
    } else {
        batch.fail(&error);
    }
}

/// A row of the shared statement: an inserted event's key, or (key empty) the records' count.
type SharedRow = (Option<String>, Option<String>, Option<i64>, Option<i64>);

enum Together {
    Both,
    EventsOnly,
}

/// One statement that appends the event batch and the records, chained onto where this writer
/// left the chain (or the stored end), the records only while the log still ends there. The
/// batch is answered unless the statement failed, and then it comes back with the error.
async fn together(
    db: &mut Db,
    batch: EventBatch,
    records: &mut [Record],
    head: &mut Option<Head>,
) -> Result<Together, (EventBatch, sqlx::Error)> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH ev AS ({}), rec AS ({} RETURNING 1) \
             SELECT aggregate_type, aggregate_id, sequence, NULL::bigint FROM ev \
             UNION ALL SELECT NULL, NULL, NULL, count(*) FROM rec",
            EventBatch::INSERT,
            writer::insert_sql(9),
        )
    });
    let start = match head.take() {
        Some(start) => start,
        None => match stored_head(db).await {
            Ok(start) => start,
            Err(error) => return Err((batch, error)),
        },
    };
    let end = link(&db.key, records, &start);
    let conn = match db.conn().await {
        Ok(conn) => conn,
        Err(error) => return Err((batch, error)),
    };
    let query = writer::bind(batch.bind(sqlx::query(&SQL)), &start, records);
    let rows: Vec<SharedRow> = match within(async {
        let rows = query.fetch_all(conn).await?;
        rows.iter().map(sqlx::FromRow::from_row).collect()
    })
    .await
    {
        Ok(rows) => rows,
        Err(error) => return Err((batch, error)),
    };
    let mut inserted = 0;
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        match row {
            (Some(kind), Some(id), Some(sequence), _) => keys.push((kind, id, sequence)),
            (_, _, _, count) => inserted = count.unwrap_or(0),
        }
    }
    batch.settle(keys);
    if inserted == records.len() as i64 {
        *head = Some(end);
        Ok(Together::Both)
    } else {
        Ok(Together::EventsOnly)
    }
}
