//! A page of `GET /events` for a time window far from the end its walk starts at (the newest
//! end for newest first, the oldest for oldest first) reads the window first, through
//! `events_by_time` (migration 0021), instead of walking the log in position order to it; a
//! window near that end keeps the walk. Both statements give the same page, for a caller who
//! sees everything and for one limited to a project. On a log of 30,000 events, one a second.
//! Through HTTP, the statement the route sent is read from `pg_stat_statements`: both give the
//! same page, so the page alone could not show the route's choice.

use chrono::{DateTime, Utc};
use herald_store::search::{explain, search, EventSearch};
use herald_store::window::reads_window_first;
use serde_json::Value;
use sqlx::types::Uuid;
use sqlx::PgPool;

use crate::support::db::fresh_database;
use crate::support::sent::runs;
use crate::support::TestApp;

fn at(text: &str) -> Option<DateTime<Utc>> {
    Some(text.parse().unwrap())
}

/// The aggregate ids of a page, in its order.
async fn ids(pool: &PgPool, query: &EventSearch) -> Vec<String> {
    let found = search(pool, query).await.unwrap();
    found.into_iter().map(|e| e.aggregate_id).collect()
}

#[tokio::test]
async fn a_window_far_from_the_walks_start_is_read_first() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let project = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at, project_id) \
         SELECT 'test', 'agg-' || g, 1, 'test.event', '1', '{}', '{}', \
                timestamptz '2026-01-01T00:00:00Z' + g * interval '1 second', $1 \
           FROM generate_series(1, 30000) g ORDER BY g",
    )
    .bind(project)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(&pool).await.unwrap();

    // An hour, newest first, far behind the newest end: read first, through the index.
    let hour = EventSearch {
        from: at("2026-01-01T02:00:00Z"),
        to: at("2026-01-01T03:00:00Z"),
        limit: 21,
        ..EventSearch::default()
    };
    assert!(reads_window_first(&pool, &hour).await.unwrap());
    let first = EventSearch {
        window_first: true,
        ..hour.clone()
    };
    let plan = explain(&pool, &first).await.unwrap();
    assert!(plan.contains("events_by_time"), "{plan}");
    let page = ids(&pool, &first).await;
    let expected: Vec<String> = (10_779..=10_799)
        .rev()
        .map(|g| format!("agg-{g}"))
        .collect();
    assert_eq!(page, expected);
    assert_eq!(ids(&pool, &hour).await, expected);
    // A caller limited to the project: a branch per project, over the window read first.
    let bound = EventSearch {
        visible: Some(vec![(project, "test".to_owned())]),
        ..first.clone()
    };
    assert_eq!(ids(&pool, &bound).await, expected);
    // The next page, after the cursor's position.
    let after = search(&pool, &first).await.unwrap()[20].global_position;
    let next = EventSearch {
        after: Some(after),
        ..first.clone()
    };
    assert_eq!(ids(&pool, &next).await[0], "agg-10778");

    // Oldest first, half an hour far from the oldest end: read first too.
    let late = EventSearch {
        from: at("2026-01-01T05:00:00Z"),
        to: at("2026-01-01T05:30:00Z"),
        ascending: true,
        limit: 3,
        ..EventSearch::default()
    };
    assert!(reads_window_first(&pool, &late).await.unwrap());
    let late_first = EventSearch {
        window_first: true,
        ..late.clone()
    };
    let expected = vec!["agg-18000", "agg-18001", "agg-18002"];
    assert_eq!(ids(&pool, &late_first).await, expected);
    assert_eq!(ids(&pool, &late).await, expected);

    // Twenty minutes near the newest end, newest first: the walk reaches it sooner.
    let recent = EventSearch {
        from: at("2026-01-01T07:59:00Z"),
        to: at("2026-01-01T08:19:00Z"),
        limit: 21,
        ..EventSearch::default()
    };
    assert!(!reads_window_first(&pool, &recent).await.unwrap());
    // Without the bound the walk starts from, nothing is passed on the way to the window.
    let open = EventSearch {
        to: None,
        ..hour.clone()
    };
    assert!(!reads_window_first(&pool, &open).await.unwrap());
}

/// How the search's window-first statement begins, as `pg_stat_statements` keeps it.
const WINDOW_START: &str = "WITH w AS MATERIALIZED (SELECT * FROM events e";

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
async fn the_route_reads_a_far_window_first_and_walks_to_a_near_one() {
    let app = TestApp::spawn().await;
    // 30,000 events of a type no projection reads, one a second, before the app's own events.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, recorded_at) \
         SELECT 'test', 'agg-' || g, 1, 'test.event', '1', '{}', '{}', \
                timestamptz '2026-01-01T00:00:00Z' + g * interval '1 second' \
           FROM generate_series(1, 30000) g ORDER BY g",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events")
        .execute(&app.pool)
        .await
        .unwrap();

    let before = runs(&app.pool, WINDOW_START).await;
    let hour = page_ids(
        &app,
        "from=2026-01-01T02:00:00Z&to=2026-01-01T03:00:00Z&limit=3",
    )
    .await;
    assert_eq!(hour, ["agg-10799", "agg-10798", "agg-10797"]);
    assert_eq!(runs(&app.pool, WINDOW_START).await, before + 1);
    // Twenty minutes near the newest end: fewer events after them (the last minute's and the
    // app's own) than in them, so the walk from that end is kept.
    let near = page_ids(
        &app,
        "from=2026-01-01T07:59:00Z&to=2026-01-01T08:19:00Z&limit=3",
    )
    .await;
    assert_eq!(near, ["agg-29939", "agg-29938", "agg-29937"]);
    assert_eq!(runs(&app.pool, WINDOW_START).await, before + 1);
}
