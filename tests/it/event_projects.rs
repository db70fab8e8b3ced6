//! Each event's project is stored with it (migration 0020): the database sets it as the event
//! is inserted, by any writer, from the aggregate's first event (a project's own events from
//! their id), and `GET /events` finds a project's events through `events_by_project` instead of
//! walking back through every tenant's. The plan is read from PostgreSQL for the search's own
//! statement, on a log of 20,000 events where the asked project holds 20.

use herald_store::search::{explain, search, EventSearch, Visible};
use sqlx::types::Uuid;
use sqlx::PgPool;

use crate::support::db::fresh_database;

/// Appends events in one statement: `(aggregate type, aggregate id, sequence, payload)`.
async fn insert(pool: &PgPool, events: &[(&str, &str, i64, &str)]) {
    let column = |f: fn(&(&str, &str, i64, &str)) -> String| events.iter().map(f).collect();
    let (types, ids, payloads): (Vec<String>, Vec<String>, Vec<String>) = (
        column(|e| e.0.to_owned()),
        column(|e| e.1.to_owned()),
        column(|e| e.3.to_owned()),
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.2).collect();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::bigint[]), 'test.event', '1', \
                unnest($4::text[]::json[]), '{}'",
    )
    .bind(types)
    .bind(ids)
    .bind(sequences)
    .bind(payloads)
    .execute(pool)
    .await
    .unwrap();
}

async fn project_of(pool: &PgPool, kind: &str, id: &str, sequence: i64) -> Option<Uuid> {
    sqlx::query_scalar(
        "SELECT project_id FROM events \
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
    )
    .bind(kind)
    .bind(id)
    .bind(sequence)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_event_is_stored_with_its_aggregates_project() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let project = Uuid::new_v4();
    let with_project = format!(r#"{{"project_id": "{project}"}}"#);
    // A job's first and second events in one statement (the second finds the first row the
    // same statement inserted), a project's own event, a user (no project) and a payload whose
    // project is not a UUID (stored without one, not refused).
    insert(
        &pool,
        &[
            ("job", "job-1", 1, &with_project),
            ("job", "job-1", 2, "{}"),
            ("project", &project.to_string(), 1, "{}"),
            ("user", "user-1", 1, r#"{"email": "a@example.com"}"#),
            ("job", "job-odd", 1, r#"{"project_id": "not-a-uuid"}"#),
        ],
    )
    .await;
    // A later event in a statement of its own, with a payload naming another project: the
    // aggregate's first event decides.
    let other = format!(r#"{{"project_id": "{}"}}"#, Uuid::new_v4());
    insert(&pool, &[("job", "job-1", 3, &other)]).await;

    assert_eq!(project_of(&pool, "job", "job-1", 1).await, Some(project));
    assert_eq!(project_of(&pool, "job", "job-1", 2).await, Some(project));
    assert_eq!(project_of(&pool, "job", "job-1", 3).await, Some(project));
    let own = project_of(&pool, "project", &project.to_string(), 1).await;
    assert_eq!(own, Some(project));
    assert_eq!(project_of(&pool, "user", "user-1", 1).await, None);
    assert_eq!(project_of(&pool, "job", "job-odd", 1).await, None);

    // The search reports the stored project, and a caller bound to the project sees its job's
    // events and its own, newest first.
    let bound = EventSearch {
        visible: Visible::Pairs(vec![(project, "job".into()), (project, "project".into())]),
        limit: 10,
        ..EventSearch::default()
    };
    let found = search(&pool, &bound).await.unwrap();
    let seen: Vec<(String, i64, Option<Uuid>)> = found
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.sequence, e.project_id))
        .collect();
    let expected = vec![
        ("job-1".to_owned(), 3, Some(project)),
        (project.to_string(), 1, Some(project)),
        ("job-1".to_owned(), 2, Some(project)),
        ("job-1".to_owned(), 1, Some(project)),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_projects_page_is_read_through_its_index() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let rare = Uuid::new_v4();
    let busy: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    // 20,000 jobs' first events: every thousandth is the rare project's, the rest spread over
    // fifty busy projects.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT 'job', 'job-' || g, 1, 'job.submitted', '1', \
                json_build_object('project_id', \
                    CASE WHEN g % 1000 = 0 THEN $1 ELSE ($2::uuid[])[1 + g % 50] END), '{}' \
           FROM generate_series(1, 20000) g",
    )
    .bind(rare)
    .bind(&busy)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE events").execute(&pool).await.unwrap();

    let kinds = ["job", "project", "api_key", "webhook_endpoint"];
    let bound = EventSearch {
        visible: Visible::Pairs(kinds.iter().map(|k| (rare, k.to_string())).collect()),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &bound).await.unwrap();
    assert!(plan.contains("events_by_project"), "{plan}");
    let asked = EventSearch {
        project: Some(rare),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &asked).await.unwrap();
    assert!(plan.contains("events_by_project"), "{plan}");
    // An aggregate's events by id, under every type it may have (as the route asks when no
    // type is given): found through the primary key, not a scan of the log.
    let kinds = ["job", "api_key", "webhook_endpoint", "project", "user"];
    let one = EventSearch {
        aggregate_id: Some("job-777".into()),
        aggregate_types: Some(kinds.iter().map(|k| k.to_string()).collect()),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &one).await.unwrap();
    assert!(plan.contains("Index Scan using events_pkey"), "{plan}");
    let found = search(&pool, &one).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].aggregate_id, "job-777");
    // A member of two projects: each project's branch reads the index backwards and stops at
    // the page's end, and the branches are merged in position order (no sort of a busy
    // project's every event).
    let two = EventSearch {
        visible: Visible::Pairs(vec![(rare, "job".into()), (busy[3], "job".into())]),
        limit: 21,
        ..EventSearch::default()
    };
    let plan = explain(&pool, &two).await.unwrap();
    // (The busy project's branch may walk the log's own index instead: at one event in fifty
    // that finds a page about as soon.)
    assert!(plan.contains("Merge Append"), "{plan}");
    assert!(
        plan.contains("Index Scan Backward using events_by_project"),
        "{plan}"
    );
    let sorts = plan.lines().filter(|line| {
        let node = line.trim_start().trim_start_matches("->  ");
        node.starts_with("Sort  (") || node.starts_with("Bitmap")
    });
    assert_eq!(sorts.count(), 0, "{plan}");

    let found = search(&pool, &bound).await.unwrap();
    assert_eq!(found.len(), 20);
    assert!(found.iter().all(|e| e.project_id == Some(rare)));
    // The merged page is the newest 21 of both projects' events, in order.
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE project_id = ANY($1) \
          ORDER BY global_position DESC LIMIT 21",
    )
    .bind(vec![rare, busy[3]])
    .fetch_all(&pool)
    .await
    .unwrap();
    let page: Vec<i64> = search(&pool, &two)
        .await
        .unwrap()
        .iter()
        .map(|e| e.global_position)
        .collect();
    assert_eq!(page, expected);
    // `project=` narrows a member's branches to that project.
    let narrowed = EventSearch {
        project: Some(rare),
        ..two.clone()
    };
    let found = search(&pool, &narrowed).await.unwrap();
    assert_eq!(found.len(), 20);
    assert!(found.iter().all(|e| e.project_id == Some(rare)));
    // Oldest first, page after page, the merged branches give both projects' events in order,
    // each once: the same positions as one query over both.
    let everything: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE project_id = ANY($1) ORDER BY global_position",
    )
    .bind(vec![rare, busy[3]])
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(pages(&pool, &two).await, everything);
    // A member of more projects than a statement takes branches is searched in one statement
    // over all of them, with the same pages.
    let mut many: Vec<(Uuid, String)> = (0..40).map(|_| (Uuid::new_v4(), "job".into())).collect();
    let Visible::Pairs(pairs) = &two.visible else {
        unreachable!("a search limited to two projects")
    };
    many.extend(pairs.clone());
    let wide = EventSearch {
        visible: Visible::Pairs(many),
        ..two
    };
    let plan = explain(&pool, &wide).await.unwrap();
    assert!(!plan.contains("Merge Append"), "{plan}");
    assert_eq!(pages(&pool, &wide).await, everything);
}

/// Every position `query` finds oldest first, read 100 at a time through the cursor.
async fn pages(pool: &PgPool, query: &EventSearch) -> Vec<i64> {
    let mut positions = Vec::new();
    let mut after = None;
    loop {
        let page = EventSearch {
            ascending: true,
            after,
            limit: 100,
            ..query.clone()
        };
        let found = search(pool, &page).await.unwrap();
        positions.extend(found.iter().map(|e| e.global_position));
        match found.last() {
            Some(last) if found.len() == 100 => after = Some(last.global_position),
            _ => return positions,
        }
    }
}
