//! Where a page of `GET /api/v1/events` with a time window walks. A page walks the log in
//! position order from one end (the newest end for newest first) and stops once it is full; for
//! a window far from that end the walk passes every event in between, because PostgreSQL takes
//! the window's events to be spread over the whole log (about 200 ms for a day in the middle of
//! a million events; docs/PERFORMANCE.md, twenty-seventh section). Such a window is first
//! bounded: the smallest and largest global positions of its events, read through
//! `events_by_time`, and the walk stays between them (docs/PERFORMANCE.md, thirty-first
//! section). The sizes that decide it are PostgreSQL's estimates (from its statistics, without
//! reading the log); the bounds are exact, so they choose the plan, never the answer.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::search::{times, EventSearch};

/// How many events between the window and the walk's end make bounding it worth its read:
/// bounding reads each of the window's events (through the BRIN index's ranges), the walk
/// passes each event in between; about twice as many cost the same.
const PASSED_PER_HELD: f64 = 2.0;

/// The global positions `query`'s page walks between (`EventSearch::positions`), or `None` to
/// walk from the end: bounded when the window is bounded on the side its walk starts from
/// (`to` newest first, `from` oldest first) and PostgreSQL expects more than
/// `PASSED_PER_HELD` times as many events between it and that end of the log as in it.
/// `Some((1, 0))` for a window with no events.
pub async fn bounds(pool: &PgPool, query: &EventSearch) -> sqlx::Result<Option<(i64, i64)>> {
    let (held, passed) = match (query.ascending, query.from, query.to) {
        (false, from, Some(to)) => (
            estimate(pool, from, Some(to)).await?,
            estimate(pool, Some(to), None).await?,
        ),
        (true, Some(from), to) => (
            estimate(pool, Some(from), to).await?,
            estimate(pool, None, Some(from)).await?,
        ),
        _ => return Ok(None),
    };
    if passed <= PASSED_PER_HELD * held {
        return Ok(None);
    }
    // `OFFSET 0` keeps the window's read through the index: without it PostgreSQL answers
    // `min`/`max` by walking `global_position` from each end, the walk this avoids.
    let mut sql = QueryBuilder::<Postgres>::new(
        "SELECT min(global_position), max(global_position) FROM \
           (SELECT global_position FROM events e WHERE true",
    );
    times(&mut sql, query);
    sql.push(" OFFSET 0) w");
    let (first, last): (Option<i64>, Option<i64>) = sql
        .build_query_as()
        .persistent(false)
        .fetch_one(pool)
        .await?;
    Ok(Some(first.zip(last).unwrap_or((1, 0))))
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
