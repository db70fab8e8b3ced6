//! Who reads which part of the request log: a member reads the records of the projects where
//! a role of theirs holds `audit:read` (owners), not of those where it does not (viewers), in
//! the list and in the export alike; a user's call in a project is recorded in that project;
//! an admin's calls on a project's key are recorded in that project; and a filter by caller
//! names one kind of caller.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{problem, TestApp, PASSWORD};

/// The projects of the records `token` reads through the list and through the export.
async fn projects_read(app: &TestApp, token: &str) -> (Vec<String>, Vec<String>) {
    let list: Value = app
        .as_user(Method::GET, "/api/v1/audit/requests?limit=100", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["project_id"].as_str().unwrap_or("none").to_owned())
        .collect();
    let export = app
        .as_user(Method::GET, "/api/v1/audit/requests/export", token)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let exported = export
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["project_id"].as_str().unwrap_or("none").to_owned()
        })
        .collect();
    (listed, exported)
}

#[tokio::test]
async fn a_member_reads_only_the_request_log_of_projects_it_may_audit() {
    let app = TestApp::spawn().await;
    let (owned, viewed) = (
        app.create_project("owned").await,
        app.create_project("viewed").await,
    );
    let user = app
        .create_user("owner-and-viewer@example.com", PASSWORD, false)
        .await;
    for (project, role) in [(owned, "owner"), (viewed, "viewer")] {
        let put = app.put_member(project, user, role).await;
        assert_eq!(put.status(), StatusCode::OK);
    }
    let token = app.login("owner-and-viewer@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // One call by a key of each project, recorded with that project.
    for project in [owned, viewed] {
        let key = app.create_key(Some(project), &["jobs:read"]).await;
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    // The user's own call in a project is recorded in that project.
    let submitted = app
        .as_user(Method::POST, "/api/v1/jobs", &token)
        .header("X-Request-Id", "member-submits-0001")
        .json(&json!({"kind": "k", "project_id": owned}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let (actor_type, project): (String, Option<uuid::Uuid>) = sqlx::query_as(
        "SELECT actor_type, project_id FROM request_log WHERE request_id = 'member-submits-0001'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((actor_type.as_str(), project), ("user", Some(owned)));
    let (listed, exported) = projects_read(&app, &token).await;
    for read in [&listed, &exported] {
        assert!(read.contains(&owned.to_string()), "{read:?}");
        assert!(!read.contains(&viewed.to_string()), "{read:?}");
    }
    // A viewer of a single project holds no `audit:read` at all.
    let viewer = app.member_token(viewed, "viewer").await;
    let refused = app
        .as_user(Method::GET, "/api/v1/audit/requests", &viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_key_and_a_user_filter_together_are_refused_not_half_applied() {
    let app = TestApp::spawn().await;
    let both = app
        .get(
            "/api/v1/audit/requests?key_id=abc&user_id=def",
            &app.admin_key,
        )
        .await;
    assert_eq!(both.status(), StatusCode::BAD_REQUEST);
    let body = problem(both).await;
    assert_eq!(body["code"], "VALIDATION_FAILED");
    assert_eq!(body["errors"][0]["field"], "user_id");
}

#[tokio::test]
async fn calls_on_a_project_and_its_members_are_recorded_in_that_project() {
    let app = TestApp::spawn().await;
    let project = app.create_project("renamed").await;
    let user = app.create_user("member@example.com", PASSWORD, false).await;
    let calls = [
        (
            Method::PUT,
            format!("/api/v1/projects/{project}/members/{user}"),
            json!({"role": "viewer"}),
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{project}/members"),
            json!(null),
        ),
        (
            Method::PATCH,
            format!("/api/v1/projects/{project}"),
            json!({"name": "renamed again"}),
        ),
        (
            Method::GET,
            format!("/api/v1/projects/{project}"),
            json!(null),
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{project}/members/{user}"),
            json!(null),
        ),
    ];
    for (method, path, body) in &calls {
        // By an admin key, which belongs to no project of its own.
        let (status, recorded) = by_admin(&app, method, path, body).await;
        assert!(status.is_success(), "{method} {path}: {status}");
        assert_eq!(
            recorded,
            (Some(project), status.as_u16()),
            "{method} {path}"
        );
    }
}

/// Sends `method path` (with `body` unless null) with the admin key; its status, and the project
/// and status of the newest record of that method and path.
async fn by_admin(
    app: &TestApp,
    method: &Method,
    path: &str,
    body: &Value,
) -> (StatusCode, (Option<uuid::Uuid>, u16)) {
    let mut request = app.request(method.clone(), path, &app.admin_key);
    if !body.is_null() {
        request = request.json(body);
    }
    let status = request.send().await.unwrap().status();
    let (project, recorded): (Option<uuid::Uuid>, i32) = sqlx::query_as(
        "SELECT project_id, status FROM request_log WHERE method = $1 AND path = $2 \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(method.as_str())
    .bind(path)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (status, (project, recorded as u16))
}

#[tokio::test]
async fn an_admins_calls_on_a_project_key_are_recorded_in_its_project() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read"]).await;
    let id = crate::support::key_id(&key).to_owned();
    let calls = [
        (Method::GET, format!("/api/v1/api-keys/{id}"), json!(null)),
        (
            Method::PATCH,
            format!("/api/v1/api-keys/{id}"),
            json!({"rate_limit": {"read_per_minute": 3}}),
        ),
        (
            Method::GET,
            format!("/api/v1/api-keys/{id}/history"),
            json!(null),
        ),
        (
            Method::POST,
            format!("/api/v1/api-keys/{id}/revoke"),
            json!(null),
        ),
        // Refused (already revoked): still a call on that project's key.
        (
            Method::POST,
            format!("/api/v1/api-keys/{id}/revoke"),
            json!(null),
        ),
    ];
    for (method, path, body) in &calls {
        let (status, recorded) = by_admin(&app, method, path, body).await;
        assert_eq!(
            recorded,
            (Some(project), status.as_u16()),
            "{method} {path}"
        );
        assert!(
            status.is_success() || status == StatusCode::CONFLICT,
            "{method} {path}: {status}"
        );
    }
}
