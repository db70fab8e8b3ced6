//! `GET /events?actor=` and `?type=` for an actor or type with few events read
//! `events_by_actor` / `events_by_type` (migration 0026) in position order instead of walking
//! the whole log; an actor that fills the log keeps the walk. On a log of 30,000 events where
//! one actor and one type hold ten of them; the pages are checked as well as the plans, for a
//! caller who sees everything, for one limited to the project, and through HTTP.

use herald_store::search::{explain, search, EventSearch, Visible};
use serde_json::Value;
use sqlx::types::Uuid;
use sqlx::PgPool;

use crate::support::db::fresh_database;
use crate::support::TestApp;

/// 30,000 events of a type no projection reads; every 3,000th (ten) is `test.rare`, by
/// `rare-user`, the rest `test.event` by `busy-key`. All in `project`.
async fn fill(pool: &PgPool, project: Option<Uuid>) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, project_id) \
         SELECT 'test', 'agg-' || g, 1, \
                CASE WHEN g % 3000 = 0 THEN 'test.rare' ELSE 'test.event' END, '1', '{}', \
                json_build_object('actor_type', 'api_key', 'actor_id', \
                    CASE WHEN g % 3000 = 0 THEN 'rare-user' ELSE 'busy-key' END), $1 \
           FROM generate_series(1, 30000) g ORDER BY g",
    )
    .bind(project)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(pool).await.unwrap();
}

/// The ten rare events' aggregate ids, newest first.
fn rare_ids() -> Vec<String> {
    (1..=10)
        .rev()
        .map(|n| format!("agg-{}", n * 3000))
        .collect()
}

async fn ids(pool: &PgPool, query: &EventSearch) -> Vec<String> {
    let found = search(pool, query).await.unwrap();
    found.into_iter().map(|e| e.aggregate_id).collect()
}

#[tokio::test]
async fn a_rare_actor_or_type_is_read_through_its_index() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let project = Uuid::new_v4();
    fill(&pool, Some(project)).await;

    let by_actor = EventSearch {
        actor_id: Some("rare-user".into()),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &by_actor).await.unwrap();
    assert!(plan.contains("events_by_actor"), "{plan}");
    assert_eq!(ids(&pool, &by_actor).await, rare_ids());

    let by_type = EventSearch {
        event_types: Some(vec!["test.rare".into()]),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &by_type).await.unwrap();
    assert!(plan.contains("events_by_type"), "{plan}");
    assert_eq!(ids(&pool, &by_type).await, rare_ids());

    // A caller limited to the project: its branch reads the actor's entries too.
    let bound = EventSearch {
        visible: Visible::Pairs(vec![(project, "test".to_owned())]),
        ..by_actor.clone()
    };
    let plan = explain(&pool, &bound).await.unwrap();
    assert!(plan.contains("events_by_actor"), "{plan}");
    assert_eq!(ids(&pool, &bound).await, rare_ids());
    // Oldest first, and the next page after a cursor's position.
    let oldest = EventSearch {
        ascending: true,
        limit: 3,
        ..by_actor.clone()
    };
    assert_eq!(
        ids(&pool, &oldest).await,
        ["agg-3000", "agg-6000", "agg-9000"]
    );
    let next = EventSearch {
        after: Some(search(&pool, &oldest).await.unwrap()[2].global_position),
        ..oldest.clone()
    };
    assert_eq!(
        ids(&pool, &next).await,
        ["agg-12000", "agg-15000", "agg-18000"]
    );

    // An actor holding nearly every event: the walk by position finds its page at once.
    let busy = EventSearch {
        actor_id: Some("busy-key".into()),
        limit: 3,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &busy).await.unwrap();
    assert!(plan.contains("events_global_position_key"), "{plan}");
    assert_eq!(
        ids(&pool, &busy).await,
        ["agg-29999", "agg-29998", "agg-29997"]
    );
}

#[tokio::test]
async fn the_route_filters_by_a_rare_actor_and_type() {
    let app = TestApp::spawn().await;
    fill(&app.pool, None).await;
    for query in [
        "actor=rare-user",
        "type=test.rare",
        "actor=rare-user&type=test.rare",
    ] {
        let response = app
            .get(&format!("/api/v1/events?{query}&limit=100"), &app.admin_key)
            .await;
        assert_eq!(response.status(), 200, "{query}");
        let page: Value = response.json().await.unwrap();
        let found: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["aggregate_id"].as_str().unwrap())
            .collect();
        assert_eq!(found, rare_ids(), "{query}");
    }
}
