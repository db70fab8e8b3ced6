//! A page of `GET /events` for a time window far from the end its walk starts at (the newest
//! end for newest first, the oldest for oldest first) walks only between the window's own first
//! and last positions, found through `events_by_time`, instead of walking the log to it; a
//! window near that end keeps the walk, and a window whose positions lie far apart (an event
//! recorded in it but appended much later) is read first and sorted. The bounds are exact (an
//! event recorded in the window but appended after it is found), for a caller who sees
//! everything and for one limited to a project; later pages take them from their cursor. On a
//! log of 30,000 events, one a second. Through HTTP, the statements the route sent are read
//! from `pg_stat_statements`: every walk gives the same page, so the page alone could not show
//! the route's choice.

use chrono::{DateTime, Utc};
use herald_store::search::{explain, search, EventSearch, Visible};
use herald_store::window::{walk, Resume, Walk};
use serde_json::Value;
use sqlx::types::Uuid;
use sqlx::PgPool;

use crate::support::db::fresh_database;
use crate::support::sent::{runs, runs_containing};
use crate::support::TestApp;

fn at(text: &str) -> Option<DateTime<Utc>> {
    Some(text.parse().unwrap())
}

/// 30,000 events of a type no projection reads, `agg-<g>` recorded at `g` seconds past
/// 2026-01-01T00:00:00Z and appended in that order; `agg-late`, recorded at 02:30:00.5 but
/// appended after `agg-10800` (03:00:00); and `agg-stray`, recorded at 05:10:00.5 but appended
/// last.
async fn fill(pool: &PgPool, project: Option<Uuid>) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at, project_id) \
         SELECT 'test', CASE g WHEN 30001 THEN 'agg-late' WHEN 30002 THEN 'agg-stray' \
                          ELSE 'agg-' || g END, 1, \
                'test.event', '1', '{}', '{}', timestamptz '2026-01-01T00:00:00Z' + \
                CASE g WHEN 30001 THEN interval '02:30:00.5' WHEN 30002 THEN interval '05:10:00.5' \
                       ELSE g * interval '1 second' END, \
                $1 \
           FROM generate_series(1, 30002) g \
          ORDER BY CASE g WHEN 30001 THEN 10800.5 ELSE g END",
    )
    .bind(project)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(pool).await.unwrap();
}

async fn position(pool: &PgPool, aggregate: &str) -> i64 {
    sqlx::query_scalar("SELECT global_position FROM events WHERE aggregate_id = $1")
        .bind(aggregate)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The aggregate ids of a page, in its order.
async fn ids(pool: &PgPool, query: &EventSearch) -> Vec<String> {
    let found = search(pool, query).await.unwrap();
    found.into_iter().map(|e| e.aggregate_id).collect()
}

#[tokio::test]
async fn a_window_far_from_the_walks_start_is_walked_between_its_bounds() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let project = Uuid::new_v4();
    fill(&pool, Some(project)).await;
    let late = position(&pool, "agg-late").await;

    // An hour, newest first, far behind the newest end: bounded, the late event included.
    let hour = EventSearch {
        from: at("2026-01-01T02:00:00Z"),
        to: at("2026-01-01T03:00:00Z"),
        limit: 21,
        ..EventSearch::default()
    };
    let range = walk(&pool, &hour, None).await.unwrap();
    assert_eq!(
        range,
        Walk::Between(position(&pool, "agg-7200").await, late)
    );
    let bounded = EventSearch {
        walk: range,
        ..hour.clone()
    };
    let plan = explain(&pool, &bounded).await.unwrap();
    assert!(plan.contains("Index Cond: ((global_position >= "), "{plan}");
    let page = ids(&pool, &bounded).await;
    let mut expected = vec!["agg-late".to_owned()];
    expected.extend((10_780..=10_799).rev().map(|g| format!("agg-{g}")));
    assert_eq!(page, expected);
    assert_eq!(ids(&pool, &hour).await, expected);
    // A caller limited to the project: its branch's walk is bounded the same way.
    let bound = EventSearch {
        visible: Visible::Pairs(vec![(project, "test".to_owned())]),
        ..bounded.clone()
    };
    let plan = explain(&pool, &bound).await.unwrap();
    assert!(plan.contains("global_position >= "), "{plan}");
    assert_eq!(ids(&pool, &bound).await, expected);
    // The next page, after the cursor's position.
    let after = search(&pool, &bounded).await.unwrap()[20].global_position;
    let next = EventSearch {
        after: Some(after),
        ..bounded.clone()
    };
    assert_eq!(ids(&pool, &next).await[0], "agg-10779");
    // Its cursor carries the range, for this window only; a type, actor or aggregate walks an
    // index of its own.
    let cursor = Resume::next(range, after, &hour);
    assert_eq!(walk(&pool, &hour, Some(cursor)).await.unwrap(), range);
    let half_hour = EventSearch {
        to: at("2026-01-01T02:30:00Z"),
        ..hour.clone()
    };
    assert_ne!(walk(&pool, &half_hour, Some(cursor)).await.unwrap(), range);
    // A window that has not long ended (or has no end) keeps no range in its cursors: an event
    // still being appended could land in it.
    for to in [
        None,
        Some(chrono::Utc::now() - chrono::TimeDelta::minutes(1)),
    ] {
        let open = EventSearch { to, ..hour.clone() };
        assert_eq!(
            Resume::next(range, after, &open),
            Resume::After(after, false)
        );
    }
    for filtered in [
        EventSearch {
            actor_id: Some("someone".into()),
            ..hour.clone()
        },
        EventSearch {
            event_types: Some(vec!["test.event".into()]),
            ..hour.clone()
        },
    ] {
        assert_eq!(walk(&pool, &filtered, None).await.unwrap(), Walk::Whole);
    }

    // Oldest first, half an hour far from the oldest end: bounded too.
    let half = EventSearch {
        from: at("2026-01-01T04:00:00Z"),
        to: at("2026-01-01T04:30:00Z"),
        ascending: true,
        limit: 3,
        ..EventSearch::default()
    };
    let (first, last) = (
        position(&pool, "agg-14400").await,
        position(&pool, "agg-16199").await,
    );
    assert_eq!(
        walk(&pool, &half, None).await.unwrap(),
        Walk::Between(first, last)
    );
    // The half hour after 05:00 holds `agg-stray`, appended last: its positions lie far apart,
    // so it is read first and sorted. Both give the walk's page.
    let sparse = EventSearch {
        from: at("2026-01-01T05:00:00Z"),
        to: at("2026-01-01T05:30:00Z"),
        ..half.clone()
    };
    assert_eq!(walk(&pool, &sparse, None).await.unwrap(), Walk::WindowFirst);
    let read_first = EventSearch {
        walk: Walk::WindowFirst,
        ..sparse.clone()
    };
    let plan = explain(&pool, &read_first).await.unwrap();
    assert!(plan.contains("events_by_time"), "{plan}");
    let expected = vec!["agg-18000", "agg-18001", "agg-18002"];
    assert_eq!(ids(&pool, &read_first).await, expected);
    assert_eq!(ids(&pool, &sparse).await, expected);

    // A window with no events: an empty range, an empty page.
    let empty = EventSearch {
        from: at("2025-01-01T00:00:00Z"),
        to: at("2025-01-02T00:00:00Z"),
        ..hour.clone()
    };
    assert_eq!(
        walk(&pool, &empty, None).await.unwrap(),
        Walk::Between(1, 0)
    );
    // Twenty minutes near the newest end, newest first: the walk reaches it sooner.
    let recent = EventSearch {
        from: at("2026-01-01T07:59:00Z"),
        to: at("2026-01-01T08:19:00Z"),
        ..hour.clone()
    };
    assert_eq!(walk(&pool, &recent, None).await.unwrap(), Walk::Whole);
    // Without the bound the walk starts from, nothing is passed on the way to the window.
    let open = EventSearch {
        to: None,
        ..hour.clone()
    };
    assert_eq!(walk(&pool, &open, None).await.unwrap(), Walk::Whole);
}

/// What a bounded search's statement holds, as `pg_stat_statements` keeps it.
const BOUNDED: &str = "e.global_position BETWEEN";

/// How the statement reading a window's bounds begins.
const BOUNDS_START: &str = "SELECT min(global_position), max(global_position)";

/// A page of `GET /api/v1/events` with these query parameters, read with the admin key.
async fn page(app: &TestApp, query: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/events?{query}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn aggregate_ids(page: &Value) -> Vec<String> {
    let data = page["data"].as_array().unwrap();
    data.iter()
        .map(|e| e["aggregate_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The aggregate ids of a page of `GET /api/v1/events` with these query parameters.
async fn page_ids(app: &TestApp, query: &str) -> Vec<String> {
    aggregate_ids(&page(app, query).await)
}

#[tokio::test]
async fn the_route_bounds_a_far_window_and_walks_to_a_near_one() {
    let app = TestApp::spawn().await;
    fill(&app.pool, None).await;

    let (before, reads) = (
        runs_containing(&app.pool, BOUNDED).await,
        runs(&app.pool, BOUNDS_START).await,
    );
    let hour = "from=2026-01-01T02:00:00Z&to=2026-01-01T03:00:00Z";
    let mut pages = vec![page(&app, &format!("{hour}&limit=100")).await];
    while let Some(cursor) = pages.last().unwrap()["next_cursor"].as_str() {
        let next = page(&app, &format!("{hour}&limit=100&cursor={cursor}")).await;
        pages.push(next);
    }
    let seen: Vec<String> = pages.iter().flat_map(aggregate_ids).collect();
    assert_eq!(seen.len(), 3_601);
    assert_eq!(seen[..3], ["agg-late", "agg-10799", "agg-10798"]);
    assert_eq!(seen[3_600], "agg-7200");
    // Every page bounded, the bounds read for the first only.
    assert_eq!(
        runs_containing(&app.pool, BOUNDED).await,
        before + pages.len() as i64
    );
    assert_eq!(runs(&app.pool, BOUNDS_START).await, reads + 1);
    let before = runs_containing(&app.pool, BOUNDED).await;
    // Twenty minutes near the newest end: fewer events after them (the last minute's and the
    // app's own) than in them, so the walk from that end is kept.
    let near = page_ids(
        &app,
        "from=2026-01-01T07:59:00Z&to=2026-01-01T08:19:00Z&limit=3",
    )
    .await;
    assert_eq!(near, ["agg-29939", "agg-29938", "agg-29937"]);
    assert_eq!(runs_containing(&app.pool, BOUNDED).await, before);
}
