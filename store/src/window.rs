//! Where a page of `GET /api/v1/events` with a time window walks. A page walks the log in
//! position order from one end (the newest end for newest first) and stops once it is full; for
//! a window far from that end the walk passes every event in between, because PostgreSQL takes
//! the window's events to be spread over the whole log (about 200 ms for a day in the middle of
//! a million events; docs/PERFORMANCE.md, twenty-seventh section). Such a window is first
//! bounded: the smallest and largest global positions of its events, read through
//! `events_by_time`, and the walk stays between them; later pages of a window that ended a
//! while ago take the range from their cursor (docs/PERFORMANCE.md, thirty-first section). The sizes that decide it are
//! PostgreSQL's estimates (from its statistics, without reading the log); the bounds are exact,
//! so they choose the plan, never the answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::search::{times, EventSearch, Visible};

/// How many events between the window and the walk's end make bounding it worth its read:
/// bounding reads each of the window's events (through the BRIN index's ranges), the walk
/// passes each event in between; about twice as many cost the same.
const PASSED_PER_HELD: f64 = 2.0;

/// The most events a window may be expected to hold to be bounded for a caller limited to some
/// projects: the bounds read every project's events of the window, where the caller's branches
/// walk only their own projects' (`events_by_project`).
const BOUND_CALLER_EVENTS: f64 = 50_000.0;

/// The most events a window whose positions lie far apart (events recorded in it but appended
/// much later: a long transaction, an import) may hold to be read first and sorted instead.
const SPARSE_WINDOW_EVENTS: i64 = 20_000;

/// How a page walks: the log from its end, between a window's positions, or the window read
/// first and sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Walk {
    #[default]
    Whole,
    /// Both included; `Between(1, 0)` for a window with no events.
    Between(i64, i64),
    WindowFirst,
}

/// Where the next page starts, as its cursor carries it: after a position, in the order the
/// pages go; for a bounded window also the range the first page found and the window it
/// belongs to (microseconds), so later pages read no bounds again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resume {
    After(i64, bool),
    Within {
        after: i64,
        ascending: bool,
        first: i64,
        last: i64,
        from: Option<i64>,
        to: Option<i64>,
    },
}

/// How long ago a window must have ended for its range to be carried by cursors. An event's
/// position is taken when it is appended and its `recorded_at` is its transaction's start, so
/// an event still being appended when the first page read the range (or, with no end, any
/// later one) could land in the window outside it; appends give up after 11 seconds.
const SETTLED: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl Resume {
    /// The cursor of the page after one that ended at `position`, for `query` walked by `walk`:
    /// with the range for a window that ended at least `SETTLED` ago, else the position alone
    /// (the next page decides again).
    pub fn next(walk: Walk, position: i64, query: &EventSearch) -> Resume {
        let settled = query.to.is_some_and(|to| to <= Utc::now() - SETTLED);
        match walk {
            Walk::Between(first, last) if settled => Resume::Within {
                after: position,
                ascending: query.ascending,
                first,
                last,
                from: query.from.map(|t| t.timestamp_micros()),
                to: query.to.map(|t| t.timestamp_micros()),
            },
            _ => Resume::After(position, query.ascending),
        }
    }

    pub fn after(self) -> i64 {
        match self {
            Resume::After(position, _)
            | Resume::Within {
                after: position, ..
            } => position,
        }
    }

    pub fn ascending(self) -> bool {
        match self {
            Resume::After(_, ascending) | Resume::Within { ascending, .. } => ascending,
        }
    }

    /// The range it carries, if it was made for `query`'s window.
    fn range_for(self, query: &EventSearch) -> Option<(i64, i64)> {
        let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros());
        match self {
            Resume::Within {
                first,
                last,
                from,
                to,
                ..
            } if from == micros(query.from) && to == micros(query.to) => Some((first, last)),
            _ => None,
        }
    }
}

/// How `query`'s page walks. `resume`'s range, for the same window, when it carries one.
/// Otherwise bounded when the window is bounded on the side its walk starts from (`to` newest
/// first, `from` oldest first) and PostgreSQL expects more than `PASSED_PER_HELD` times as many
/// events between it and that end of the log as in it; not when a type, actor or aggregate is
/// asked for (each walks an index of its own), nor for a caller limited to some projects when
/// the window is expected to hold more than `BOUND_CALLER_EVENTS`. A window whose positions
/// lie more than four times as far apart as it has events is read first instead, when it
/// holds at most `SPARSE_WINDOW_EVENTS`, else walked.
pub async fn walk(
    pool: &PgPool,
    query: &EventSearch,
    resume: Option<Resume>,
) -> sqlx::Result<Walk> {
    if let Some((first, last)) = resume.and_then(|r| r.range_for(query)) {
        return Ok(Walk::Between(first, last));
    }
    let indexed =
        query.event_types.is_some() || query.actor_id.is_some() || query.aggregate_id.is_some();
    let (held, passed) = match (indexed, query.ascending, query.from, query.to) {
        (true, ..) => return Ok(Walk::Whole),
        (_, false, from, Some(to)) => (
            estimate(pool, from, Some(to)).await?,
            estimate(pool, Some(to), None).await?,
        ),
        (_, true, Some(from), to) => (
            estimate(pool, Some(from), to).await?,
            estimate(pool, None, Some(from)).await?,
        ),
        _ => return Ok(Walk::Whole),
    };
    let too_wide = matches!(query.visible, Visible::Pairs(_)) && held > BOUND_CALLER_EVENTS;
    if passed <= PASSED_PER_HELD * held || too_wide {
        return Ok(Walk::Whole);
    }
    // `OFFSET 0` keeps the window's read through the index: without it PostgreSQL answers
    // `min`/`max` by walking `global_position` from each end, the walk this avoids.
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT min(global_position), max(global_position), count(*) FROM \
           (SELECT global_position FROM events e WHERE true",
    );
    times(&mut sql, query);
    sql.push(" OFFSET 0) w");
    let (first, last, count): (Option<i64>, Option<i64>, i64) = sql
        .build_query_as()
        .persistent(false)
        .fetch_one(pool)
        .await?;
    let Some((first, last)) = first.zip(last) else {
        return Ok(Walk::Between(1, 0));
    };
    Ok(if last - first < 4 * count {
        Walk::Between(first, last)
    } else if count <= SPARSE_WINDOW_EVENTS {
        Walk::WindowFirst
    } else {
        Walk::Whole
    })
}

/// How many events PostgreSQL expects with `from <= recorded_at < to`.
async fn estimate(
    pool: &PgPool,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<f64> {
    let mut sql =
        QueryBuilder::<Postgres>::new("EXPLAIN (FORMAT JSON) SELECT 1 FROM events WHERE true");
    if let Some(from) = from {
        sql.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = to {
        sql.push(" AND recorded_at < ").push_bind(to);
    }
    let plan: serde_json::Value = sql
        .build_query_scalar()
        .persistent(false)
        .fetch_one(pool)
        .await?;
    Ok(plan[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(f64::MAX))
}
