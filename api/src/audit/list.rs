//! A page of `GET /audit/requests`: its two statements and the choice between them.
//!
//! A page is the newest records that match, so PostgreSQL reads the log backwards by sequence
//! number and stops at the page's end. For a time window that ends in the past that walk starts
//! at the log's end and passes every record after the window before it finds one (150–300 ms
//! at a million records, growing with the log; docs/PERFORMANCE.md, twenty-seventh section):
//! the planner takes the window's records to be spread over the whole log. A window that holds
//! few records, a small part of what the log holds after it, is therefore read window first,
//! through `request_log_by_time`, and sorted.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The filters of a page: `$1` actor id, `$2` project, `$3` route, `$4` method, `$5` status,
/// `$6` outcome, `$7` from, `$8` to (excluded), `$9` before this sequence number (the cursor),
/// `$10` the caller's visible projects (`NULL`: all), `$12` actor type; a `NULL` filter
/// matches everything. `$11` is the page size.
macro_rules! filters {
    () => {
        "($1::text IS NULL OR actor_id = $1) \
         AND ($2::uuid IS NULL OR project_id = $2) AND ($3::text IS NULL OR route = $3) \
         AND ($4::text IS NULL OR method IN ($4, upper($4))) AND ($5::int IS NULL OR status = $5) \
         AND ($6::text IS NULL OR outcome = $6) AND ($7::timestamptz IS NULL OR occurred_at >= $7) \
         AND ($8::timestamptz IS NULL OR occurred_at < $8) AND ($9::bigint IS NULL OR seq < $9) \
         AND ($10::uuid[] IS NULL OR project_id = ANY($10)) \
         AND ($12::text IS NULL OR actor_type = $12)"
    };
}

/// One page, newest first, read backwards through the log. Sent unprepared (each call planned
/// with its values), so a filter given uses its index: `request_log_by_actor` for a caller,
/// `request_log_by_project` for a project or a project-bound caller, instead of a walk back
/// through every tenant's records.
pub const LIST_SQL: &str = concat!(
    "SELECT * FROM request_log WHERE ",
    filters!(),
    " ORDER BY seq DESC LIMIT $11"
);

/// The same page for a window that ends at `$8` and holds at most `WINDOW_ROWS` records: the
/// window's records first (through `request_log_by_time`), then the other filters and the
/// sort, so nothing after the window is read. Same parameters as `LIST_SQL`.
pub const WINDOW_SQL: &str = concat!(
    "WITH w AS MATERIALIZED (SELECT * FROM request_log \
       WHERE ($7::timestamptz IS NULL OR occurred_at >= $7) AND occurred_at < $8) \
     SELECT * FROM w WHERE ",
    filters!(),
    " ORDER BY seq DESC LIMIT $11"
);

/// The most records a window may hold to be read window first: reading and sorting them costs
/// at most a few tens of milliseconds, whatever the log's size.
pub const WINDOW_ROWS: i64 = 20_000;

/// How many records walking back past costs as much as reading and sorting one of the window's
/// (about 0.6 µs against 1.7 µs at a million records; docs/PERFORMANCE.md).
const WALK_PER_READ: i64 = 3;

/// The statement for a page with these time bounds: `WINDOW_SQL` when the window has an end,
/// holds at most `WINDOW_ROWS` records, and the log holds more than `WALK_PER_READ` times as
/// many after it (reading the window then costs less than walking back to it), else
/// `LIST_SQL`. Both are counted through the index, each count stopping once the answer is
/// known; the cursor is left out, so every page of one window takes the same statement.
pub async fn list_sql(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<&'static str> {
    let Some(to) = to else {
        return Ok(LIST_SQL);
    };
    let (held, after): (i64, i64) = sqlx::query_as(
        "WITH w AS (SELECT count(*) AS n FROM (SELECT 1 FROM request_log \
                      WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) AND occurred_at < $2 \
                      LIMIT $3) x) \
         SELECT n, (SELECT count(*) FROM (SELECT 1 FROM request_log WHERE occurred_at >= $2 \
                      LIMIT (SELECT $4 * n + 1 FROM w)) a) \
           FROM w",
    )
    .persistent(false)
    .bind(from)
    .bind(to)
    .bind(WINDOW_ROWS + 1)
    .bind(WALK_PER_READ)
    .fetch_one(pool)
    .await?;
    Ok(if held <= WINDOW_ROWS && after > WALK_PER_READ * held {
        WINDOW_SQL
    } else {
        LIST_SQL
    })
}
