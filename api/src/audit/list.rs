//! A page of `GET /audit/requests`: its two statements and the choice between them.
//!
//! A page is the newest records that match, so PostgreSQL reads the log backwards by sequence
//! number and stops at the page's end. For a time window that ends in the past that walk starts
//! at the log's end and passes every record after the window before it finds one (150–300 ms
//! at a million records, growing with the log; docs/PERFORMANCE.md, twenty-seventh section):
//! the planner takes the window's records to be spread over the whole log. A window that holds
//! less than half of what the log holds after it is therefore first bounded: the smallest and
//! largest sequence numbers of its records, read through `request_log_by_time`, and the walk
//! then starts at the largest and stops at the smallest; later pages take the range from their
//! cursor (docs/PERFORMANCE.md, thirty-first section). The bounds are exact, however late a
//! long request's record was written, so both walks give the same page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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

/// The same page with its walk bounded to the window's sequence numbers, `$13` to `$14`: it
/// starts at the window's last record, not at the log's end. `LIST_SQL`'s parameters and these
/// two.
pub const RANGE_SQL: &str = concat!(
    "SELECT * FROM request_log WHERE seq BETWEEN $13 AND $14 AND ",
    filters!(),
    " ORDER BY seq DESC LIMIT $11"
);

/// How a page walks the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// From the log's end (`LIST_SQL`).
    Whole,
    /// Between these sequence numbers, both included (`RANGE_SQL`); `Between(1, 0)` for a
    /// window with no records.
    Between(i64, i64),
}

impl Walk {
    pub fn statement(self) -> &'static str {
        match self {
            Walk::Whole => LIST_SQL,
            Walk::Between(..) => RANGE_SQL,
        }
    }

    /// The cursor of the page after one that ended at `seq`, walked this way for this window.
    pub fn resume(
        self,
        seq: i64,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Resume {
        match (self, to) {
            (Walk::Between(first, last), Some(to)) => Resume::Within {
                before: seq,
                first,
                last,
                from: from.map(|t| t.timestamp_micros()),
                to: to.timestamp_micros(),
            },
            _ => Resume::Before(seq),
        }
    }
}

/// Where the next page starts, as its cursor carries it: before a sequence number, and for a
/// bounded window also the range its first page found, with the window it belongs to
/// (microseconds), so later pages of that window read no bounds again and the last of them
/// stops at the window's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resume {
    Before(i64),
    Within {
        before: i64,
        first: i64,
        last: i64,
        from: Option<i64>,
        to: i64,
    },
}

impl Resume {
    /// The sequence number the next page's records come before.
    pub fn before(self) -> i64 {
        match self {
            Resume::Before(seq) | Resume::Within { before: seq, .. } => seq,
        }
    }
}

/// How many records after the window make bounding it worth its read: bounding reads every
/// record of the window (about 0.3–0.5 µs each through `request_log_by_time`) where the walk
/// passes every record after it (about 0.2 µs each): about twice as many cost the same.
const AFTER_PER_HELD: i64 = 2;

/// How a page with these time bounds walks: `Between` the window's first and last sequence
/// numbers when the window has an end and the log holds more than `AFTER_PER_HELD` times as
/// many records after it as in it (reading the window's bounds then costs less than walking
/// back to it), else `Whole`. The sizes are estimated from three probes of the indexes, one
/// record each: the log's last sequence number, and those of the last record that began
/// before `to` and the first that began at or after `from`. Sequence numbers follow the time
/// records began closely enough to choose with; the bounds themselves are exact.
///
/// A page after the first (`resume`) walks as the first did: between the range its cursor
/// carries when the cursor was made for the same window (nothing is read again), else from its
/// position. A page filtered by `indexed` (a caller or a project, each with an index of its
/// own) walks that index from the end as before, which is cheaper than reading every tenant's
/// records of the window.
pub async fn walk(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    indexed: bool,
    resume: Option<Resume>,
) -> sqlx::Result<Walk> {
    if let Some(resume) = resume {
        return Ok(match resume {
            Resume::Within {
                first,
                last,
                from: f,
                to: t,
                ..
            } if f == from.map(|t| t.timestamp_micros())
                && Some(t) == to.map(|t| t.timestamp_micros()) =>
            {
                Walk::Between(first, last)
            }
            _ => Walk::Whole,
        });
    }
    let Some(to) = to.filter(|_| !indexed) else {
        return Ok(Walk::Whole);
    };
    let (end, last, first): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT max(seq) FROM request_log), \
                (SELECT seq FROM request_log WHERE occurred_at < $2 \
                  ORDER BY occurred_at DESC LIMIT 1), \
                (SELECT seq FROM request_log WHERE occurred_at >= coalesce($1, '-infinity') \
                  ORDER BY occurred_at LIMIT 1)",
    )
    .persistent(false)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    let (Some(end), Some(last), Some(first)) = (end, last, first) else {
        // Nothing began before `to`, or nothing at or after `from`: an empty window.
        return Ok(Walk::Between(1, 0));
    };
    let held = (last - first + 1).max(0);
    if end - last > AFTER_PER_HELD * held {
        bounds(pool, from, to).await
    } else {
        Ok(Walk::Whole)
    }
}

/// The window's first and last sequence numbers. `OFFSET 0` keeps the window's read through
/// `request_log_by_time`: without it PostgreSQL answers `min`/`max` by walking the primary key
/// from each end, the walk this avoids.
async fn bounds(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
) -> sqlx::Result<Walk> {
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT min(seq), max(seq) FROM (SELECT seq FROM request_log \
           WHERE ($1::timestamptz IS NULL OR occurred_at >= $1) AND occurred_at < $2 OFFSET 0) w",
    )
    .persistent(false)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await?;
    Ok(match (first, last) {
        (Some(first), Some(last)) => Walk::Between(first, last),
        _ => Walk::Between(1, 0),
    })
}
