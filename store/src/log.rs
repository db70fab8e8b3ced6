//! Reading the global log in commit-safe order.
//!
//! Events are ordered by `(tx_id, global_position)`. A page never includes a transaction id at
//! or above `pg_snapshot_xmin(pg_current_snapshot())`: below that horizon every transaction has
//! committed or aborted, so no event can later appear before the reader's position. This is
//! what keeps catch-up readers from skipping events whose transactions commit late.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// A reader's place in the log: the last `(tx_id, global_position)` it consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub tx_id: i64,
    pub global_position: i64,
}

/// One event as stored, with its place in the global order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub payload: Value,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
    /// The project the event belongs to (its aggregate's; migration 0020); `None` for users'
    /// and account-wide resources' events.
    pub project_id: Option<Uuid>,
}

impl StoredEvent {
    pub fn position(&self) -> Position {
        Position {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    global_position: i64,
    tx_id: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    payload: Value,
    metadata: sqlx::types::Json<HashMap<String, String>>,
    recorded_at: DateTime<Utc>,
    project_id: Option<Uuid>,
}

impl From<Row> for StoredEvent {
    fn from(row: Row) -> Self {
        Self {
            global_position: row.global_position,
            tx_id: row.tx_id,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: row.event_type,
            payload: row.payload,
            metadata: row.metadata.0,
            recorded_at: row.recorded_at,
            project_id: row.project_id,
        }
    }
}

pub(crate) const COLUMNS: &str = "global_position, tx_id::text::bigint AS tx_id, aggregate_type, \
     aggregate_id, sequence, event_type, payload, metadata, recorded_at, project_id";

/// Where a page of the log starts, ends and is ordered. The order is spelled with the table's
/// name: a bare `tx_id` would name the output column (the `bigint` that `COLUMNS` casts it
/// to), which no index is ordered by, so every page would read and sort the whole log after
/// the reader's position. Qualified, a reader far behind gets the next `limit` entries of the
/// `(tx_id, global_position)` index (tests/it/log_reads.rs). Only statistics far behind the
/// table (say, taken while it was empty) can still make the planner scan and sort, expecting
/// a few rows, until autovacuum analyzes it again.
const PAGE_AFTER: &str = "WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.tx_id, events.global_position LIMIT $3";

/// The statement `read_after` runs ($1, $2: the position; $3: the limit); public so that a
/// test can check its plan.
pub fn read_after_statement() -> String {
    format!("SELECT {COLUMNS} FROM events {PAGE_AFTER}")
}

/// The statement `read_page` runs (as `read_after_statement`, and $4: the wanted types);
/// public so that a test can check its plan. Other types' documents come back as `null` and
/// `{}`: nothing to transfer or parse.
pub fn read_page_statement() -> String {
    format!(
        "SELECT global_position, tx_id::text::bigint AS tx_id, aggregate_type, aggregate_id, \
                sequence, event_type, recorded_at, project_id, \
                CASE WHEN aggregate_type = ANY($4) THEN payload ELSE 'null' END AS payload, \
                CASE WHEN aggregate_type = ANY($4) THEN metadata ELSE '{{}}' END AS metadata \
           FROM events {PAGE_AFTER}"
    )
}

/// Up to `limit` committed events after `after`, in global order, never past the horizon.
pub async fn read_after(
    executor: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&read_after_statement())
        .bind(after.tx_id)
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// A page of the log read for a reader that applies only some aggregate types.
#[derive(Debug, Default)]
pub struct Page {
    /// How many events the page covered, wanted or not.
    pub read: usize,
    /// The position of the page's last event (`None`: nothing to read).
    pub last: Option<Position>,
    /// The page's events of the wanted types, in order.
    pub wanted: Vec<StoredEvent>,
}

/// Like `read_after`, but only events of the `wanted` aggregate types carry (and cost the
/// decoding of) their payload and metadata; the others only count towards the page.
pub async fn read_page(
    executor: impl PgExecutor<'_>,
    after: Position,
    limit: i64,
    wanted: &[&str],
) -> Result<Page, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&read_page_statement())
        .bind(after.tx_id)
        .bind(after.global_position)
        .bind(limit)
        .bind(wanted)
        .fetch_all(executor)
        .await?;
    let events = rows.into_iter().map(StoredEvent::from);
    let mut page = Page::default();
    for event in events {
        page.read += 1;
        page.last = Some(event.position());
        if wanted.contains(&event.aggregate_type.as_str()) {
            page.wanted.push(event);
        }
    }
    Ok(page)
}

/// Whether committed events after `after` wait behind the horizon, for a reader whose
/// `read_page` from `after` just came back empty: a transaction older than they are is still
/// open, so no reader may pass them yet, and the reader should look again shortly rather than
/// wait to be woken. (Same access path as the page read: the `(tx_id, global_position)` index.)
pub async fn held_back(
    executor: impl PgExecutor<'_>,
    after: Position,
) -> Result<bool, sqlx::Error> {
    // Planned per call: a plan cached while the table was small would scan all of it.
    sqlx::query_scalar(
        "SELECT count(*) > 0 FROM (SELECT 1 FROM events \
                                    WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
                                    ORDER BY tx_id, global_position LIMIT 1) AS next",
    )
    .persistent(false)
    .bind(after.tx_id)
    .bind(after.global_position)
    .fetch_one(executor)
    .await
}

/// All events of one aggregate, oldest first.
pub async fn aggregate_history(
    executor: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    aggregate_history_after(executor, aggregate_type, aggregate_id, 0).await
}

/// The events of one aggregate after its `sequence`, oldest first. An aggregate only ever
/// appends its next sequence number, so reading on from the last one seen misses nothing.
pub async fn aggregate_history_after(
    executor: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
           AND sequence > $3 ORDER BY sequence"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// The last sequence number of an aggregate (0 when it has no events).
pub async fn aggregate_version(
    executor: impl PgExecutor<'_>,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(max(sequence), 0) FROM events \
         WHERE aggregate_type = $1 AND aggregate_id = $2",
    )
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_one(executor)
    .await
}

/// Up to `limit` events with `after < global_position <= until`, in position order (for
/// replays, which only look at events that committed before they started).
pub async fn read_range(
    executor: impl PgExecutor<'_>,
    after: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE global_position > $1 AND global_position <= $2 \
         ORDER BY global_position LIMIT $3"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after)
        .bind(until)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}
