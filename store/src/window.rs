//! Whether a page of `GET /api/v1/events` reads its time window first. A page walks the log in
//! position order from one end (the newest end for newest first) and stops once it is full; for
//! a window far from that end the walk passes every event in between, because PostgreSQL takes
//! the window's events to be spread over the whole log (about 200 ms for a day in the middle of
//! a million events; docs/PERFORMANCE.md, twenty-seventh section). Reading the window through
//! `events_by_time` and sorting it costs what the window holds instead, so a small window far
//! from the walk's start is read first. The sizes are PostgreSQL's estimates (from its
//! statistics, without reading the log): they choose the plan, never the answer.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::search::EventSearch;

/// The most events PostgreSQL may expect a window to hold for it to be read first: reading and
/// sorting them costs at most a few tens of milliseconds, whatever the log's size.
pub const WINDOW_EVENTS: f64 = 20_000.0;

/// How many events walking past costs as much as reading and sorting one of the window's.
const WALK_PER_READ: f64 = 3.0;

/// Whether `query`'s page is cheaper with its window read first: the window is bounded on the
/// side its walk starts from (`to` newest first, `from` oldest first), is expected to hold at
/// most `WINDOW_EVENTS` events, and more than `WALK_PER_READ` times as many lie between it and
/// that end of the log.
pub async fn reads_window_first(pool: &PgPool, query: &EventSearch) -> sqlx::Result<bool> {
    let (held, passed) = match (query.ascending, query.from, query.to) {
        (false, from, Some(to)) => (
            estimate(pool, from, Some(to)).await?,
            estimate(pool, Some(to), None).await?,
        ),
        (true, Some(from), to) => (
            estimate(pool, Some(from), to).await?,
            estimate(pool, None, Some(from)).await?,
        ),
        _ => return Ok(false),
    };
    Ok(held <= WINDOW_EVENTS && passed > WALK_PER_READ * held)
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
