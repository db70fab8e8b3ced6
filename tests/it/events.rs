//! `GET /api/v1/events`: the log as callers read it: filtered by type, resource, actor, project
//! and time, paged without gaps or repeats in either order, and limited to what each caller may
//! see (a project key its project's events of the kinds its scopes read; admins everything).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{key_id, problem, TestApp, PASSWORD};

async fn events(app: &TestApp, key: &str, query: &str) -> Value {
    let response = app.get(&format!("/api/v1/events?{query}"), key).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json().await.unwrap()
}

fn types(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn callers_read_the_log_filtered_paged_and_limited_to_what_they_may_see() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let (other, other_key) = app.project_with_key(&["jobs:write"]).await;
    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    app.submit_job(&key, json!({"kind": "render"})).await;
    app.submit_job(&other_key, json!({"kind": "render"})).await;
    let made = app
        .post(
            "/api/v1/api-keys",
            &app.admin_key,
            json!({"name": "k", "scopes": ["jobs:read"], "project_id": project}),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    app.create_user("someone@example.com", PASSWORD, false)
        .await;

    // The project's jobs:read key: its own project's job and project events, nothing else.
    let mine = events(&app, &key, "limit=100").await;
    let seen: BTreeSet<String> = types(&mine).into_iter().collect();
    assert_eq!(
        seen,
        BTreeSet::from(["job.queued".to_owned(), "project.created".to_owned()])
    );
    assert_eq!(types(&mine).len(), 3, "two jobs and the project: {mine}");
    for event in mine["data"].as_array().unwrap() {
        assert_eq!(event["project_id"], project.to_string().as_str());
    }
    let positions: Vec<i64> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] > w[1]), "newest first");

    // The admin sees everything, without key hashes.
    let all = events(&app, &app.admin_key, "limit=100").await;
    let seen: BTreeSet<String> = types(&all).into_iter().collect();
    for kind in [
        "job.queued",
        "api_key.created",
        "user.created",
        "project.created",
    ] {
        assert!(seen.contains(kind), "{kind} in {seen:?}");
    }
    assert!(!all.to_string().contains("key_hash"));

    // Filters.
    let queued = events(&app, &app.admin_key, "type=job.queued&limit=100").await;
    assert_eq!(types(&queued).len(), 3);
    let one = events(&app, &key, &format!("aggregate_id={job}")).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["aggregate_type"], "job");
    assert_eq!(
        one["data"][0]["id"],
        format!("evt_{}", one["data"][0]["global_position"])
    );
    let by_actor = events(&app, &app.admin_key, &format!("actor={}", key_id(&key))).await;
    assert_eq!(types(&by_actor), ["job.queued", "job.queued"]);
    let in_other = events(&app, &app.admin_key, &format!("project={other}")).await;
    // Its job, the key `project_with_key` made in it, and the project itself.
    assert_eq!(
        types(&in_other),
        ["job.queued", "api_key.created", "project.created"]
    );
    let future = events(&app, &app.admin_key, "from=2999-01-01T00:00:00Z").await;
    assert_eq!(future["data"], json!([]));
    // `to` is exclusive and `from` inclusive: split at the last job's event, they part it.
    let last_job = &queued["data"][0];
    let at = last_job["recorded_at"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");
    let before = events(&app, &app.admin_key, &format!("type=job.queued&to={at}")).await;
    let since = events(&app, &app.admin_key, &format!("type=job.queued&from={at}")).await;
    assert_eq!(types(&before).len(), 2, "{before}");
    assert_eq!(since["data"].as_array().unwrap().len(), 1, "{since}");
    assert_eq!(since["data"][0]["id"], last_job["id"]);

    // Paging one at a time, oldest first, gives the same events with no gap or repeat.
    let mut cursor: Option<String> = None;
    let mut walked = Vec::new();
    loop {
        let query = match &cursor {
            Some(c) => format!("order=asc&limit=1&cursor={c}"),
            None => "order=asc&limit=1".to_owned(),
        };
        let page = events(&app, &app.admin_key, &query).await;
        walked.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["global_position"].as_i64().unwrap()),
        );
        if page["has_more"] != true {
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
    }
    let mut newest_first: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_i64().unwrap())
        .collect();
    newest_first.reverse();
    assert_eq!(walked, newest_first);

    // A key with no read scope for any resource reads no events; bad input is refused.
    let (_, usage_only) = app.project_with_key(&["usage:read"]).await;
    let refused = app.get("/api/v1/events", &usage_only).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let bad = app.get("/api/v1/events?order=sideways", &key).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(bad).await["errors"][0]["field"], "order");
    let bad = app.get("/api/v1/events?aggregate_type=jobs", &key).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(bad).await["errors"][0]["field"], "aggregate_type");
    for (url, field) in [
        ("/api/v1/events?type=", "type"),
        ("/api/v1/events?type=%20,", "type"),
        ("/api/v1/events/stream?types=", "types"),
    ] {
        let bad = app.get(url, &key).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{url}");
        assert_eq!(problem(bad).await["errors"][0]["field"], field);
    }
    // A cursor is followed in the order it came from, not in the other one.
    let first = events(&app, &app.admin_key, "limit=1").await;
    let newest_first_cursor = first["next_cursor"].as_str().unwrap();
    let turned = app
        .get(
            &format!("/api/v1/events?order=asc&cursor={newest_first_cursor}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(turned.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(turned).await["errors"][0]["field"], "cursor");

    // A viewer sees its project's events; another project's are not there.
    let viewer = app.member_token(other, "viewer").await;
    let response = app
        .as_user(reqwest::Method::GET, "/api/v1/events?limit=100", &viewer)
        .send()
        .await
        .unwrap();
    let page: Value = response.json().await.unwrap();
    for event in page["data"].as_array().unwrap() {
        assert_eq!(event["project_id"], other.to_string().as_str(), "{event}");
    }
    assert!(types(&page).contains(&"job.queued".to_owned()));
}

#[tokio::test]
async fn a_key_bound_to_no_project_reads_the_events_its_scopes_read_in_every_project() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let (_, other_key) = app.project_with_key(&["jobs:write"]).await;
    app.submit_job(&key, json!({"kind": "render"})).await;
    app.submit_job(&other_key, json!({"kind": "render"})).await;
    app.create_user("someone@example.com", PASSWORD, false)
        .await;
    // An admin key narrowed to reading jobs (keys bound to no project are made as admin keys).
    let made = app
        .post(
            "/api/v1/api-keys",
            &app.admin_key,
            json!({"name": "dashboard", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await.unwrap();
    let narrowed = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/api-keys/{}", made["id"].as_str().unwrap()),
            &app.admin_key,
        )
        .json(&json!({"scopes": ["jobs:read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(narrowed.status(), StatusCode::OK);
    let reader = made["key"].as_str().unwrap().to_owned();

    // Like its job list, its events span every project; only the kinds jobs:read reads.
    let seen = events(&app, &reader, "limit=100").await;
    assert_eq!(
        types(&seen).iter().filter(|t| *t == "job.queued").count(),
        2
    );
    let kinds: BTreeSet<String> = types(&seen).into_iter().collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["job.queued".to_owned(), "project.created".to_owned()])
    );
    let keys = events(&app, &reader, "aggregate_type=api_key").await;
    assert_eq!(keys["data"], json!([]));
}

#[tokio::test]
async fn a_nul_in_a_filter_is_a_400_naming_it_not_a_server_error() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("aggregate_id=%00", "aggregate_id"),
        ("limit=5&actor=key%00", "actor"),
        ("type=job.queued%00", "type"),
    ] {
        let response = app
            .get(&format!("/api/v1/events?{query}"), &app.admin_key)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = problem(response).await;
        assert_eq!(body["code"], "VALIDATION_FAILED");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let path = app.get("/api/v1/webhooks/we%00", &app.admin_key).await;
    assert_eq!(path.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(path).await["errors"][0]["field"], "path");
}
