//! A page of `GET /events` for a time window far from the end its walk starts at (the newest
//! end for newest first, the oldest for oldest first) walks only between the window's own first
//! and last positions, found through `events_by_time`, instead of walking the log to it; a
//! window near that end keeps the walk. The bounds are exact (an event recorded in the window
//! but appended last is found), for a caller who sees everything and for one limited to a
//! project. On a log of 30,000 events, one a second. Through HTTP, the statement the route sent
//! is read from `pg_stat_statements`: both walks give the same page, so the page alone could
//! not show the route's choice.

use chrono::{DateTime, Utc};
use herald_store::search::{explain, search, EventSearch};
use herald_store::window::bounds;
use serde_json::Value;
use sqlx::types::Uuid;
use sqlx::PgPool;

use crate::support::db::fresh_database;
use crate::support::sent::runs_containing;
use crate::support::TestApp;

fn at(text: &str) -> Option<DateTime<Utc>> {
    Some(text.parse().unwrap())
}

/// 30,000 events of a type no projection reads, `agg-<g>` recorded at `g` seconds past
/// 2026-01-01T00:00:00Z, then `agg-late`, recorded at 02:30:00.5 but appended last.
async fn fill(pool: &PgPool, project: Option<Uuid>) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at, project_id) \
         SELECT 'test', CASE WHEN g <= 30000 THEN 'agg-' || g ELSE 'agg-late' END, 1, \
                'test.event', '1', '{}', '{}', timestamptz '2026-01-01T00:00:00Z' + \
                CASE WHEN g <= 30000 THEN g * interval '1 second' ELSE interval '02:30:00.5' END, \
                $1 \
           FROM generate_series(1, 30001) g ORDER BY g",
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
    let range = bounds(&pool, &hour).await.unwrap();
    assert_eq!(range, Some((position(&pool, "agg-7200").await, late)));
    let bounded = EventSearch {
        positions: range,
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
        visible: Some(vec![(project, "test".to_owned())]),
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

    // Oldest first, half an hour far from the oldest end: bounded too.
    let half = EventSearch {
        from: at("2026-01-01T05:00:00Z"),
        to: at("2026-01-01T05:30:00Z"),
        ascending: true,
        limit: 3,
        ..EventSearch::default()
    };
    let range = bounds(&pool, &half).await.unwrap();
    let (first, last) = (
        position(&pool, "agg-18000").await,
        position(&pool, "agg-19799").await,
    );
    assert_eq!(range, Some((first, last)));
    let expected = vec!["agg-18000", "agg-18001", "agg-18002"];
    let bounded = EventSearch {
        positions: range,
        ..half.clone()
    };
    assert_eq!(ids(&pool, &bounded).await, expected);
    assert_eq!(ids(&pool, &half).await, expected);

    // A window with no events: an empty range, an empty page.
    let empty = EventSearch {
        from: at("2025-01-01T00:00:00Z"),
        to: at("2025-01-02T00:00:00Z"),
        ..hour.clone()
    };
    assert_eq!(bounds(&pool, &empty).await.unwrap(), Some((1, 0)));
    // Twenty minutes near the newest end, newest first: the walk reaches it sooner.
    let recent = EventSearch {
        from: at("2026-01-01T07:59:00Z"),
        to: at("2026-01-01T08:19:00Z"),
        ..hour.clone()
    };
    assert_eq!(bounds(&pool, &recent).await.unwrap(), None);
    // Without the bound the walk starts from, nothing is passed on the way to the window.
    let open = EventSearch {
        to: None,
        ..hour.clone()
    };
    assert_eq!(bounds(&pool, &open).await.unwrap(), None);
}

/// What a bounded search's statement holds, as `pg_stat_statements` keeps it.
const BOUNDED: &str = "e.global_position BETWEEN";

/// The aggregate ids of a page of `GET /api/v1/events` with these query parameters.
async fn page_ids(app: &TestApp, query: &str) -> Vec<String> {
    let response = app
        .get(&format!("/api/v1/events?{query}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    let data = page["data"].as_array().unwrap();
    data.iter()
        .map(|e| e["aggregate_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_route_bounds_a_far_window_and_walks_to_a_near_one() {
    let app = TestApp::spawn().await;
    fill(&app.pool, None).await;

    let before = runs_containing(&app.pool, BOUNDED).await;
    let hour = page_ids(
        &app,
        "from=2026-01-01T02:00:00Z&to=2026-01-01T03:00:00Z&limit=3",
    )
    .await;
    assert_eq!(hour, ["agg-late", "agg-10799", "agg-10798"]);
    assert_eq!(runs_containing(&app.pool, BOUNDED).await, before + 1);
    // Twenty minutes near the newest end: fewer events after them (the last minute's and the
    // app's own) than in them, so the walk from that end is kept.
    let near = page_ids(
        &app,
        "from=2026-01-01T07:59:00Z&to=2026-01-01T08:19:00Z&limit=3",
    )
    .await;
    assert_eq!(near, ["agg-29939", "agg-29938", "agg-29937"]);
    assert_eq!(runs_containing(&app.pool, BOUNDED).await, before + 1);
}
