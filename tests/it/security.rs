//! Authentication and tenancy: 401 identical for every bad key, 403 naming the scope, 404 for
//! another project's jobs, both header forms accepted, never the query string.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

async fn unauthenticated_body(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let mut body = problem(response).await;
    body.as_object_mut().unwrap().remove("request_id");
    body
}

#[tokio::test]
async fn every_kind_of_bad_key_gets_the_same_401() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let missing = app
        .client
        .get(app.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    let reference = unauthenticated_body(missing).await;
    assert_eq!(reference["code"], "UNAUTHENTICATED");

    let mut typo = key.clone().into_bytes();
    let last = typo.len() - 8;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let unknown = herald_domain::api_key::ApiKeyToken::generate()
        .expose()
        .to_owned();
    let mut wrong_secret = key.clone();
    wrong_secret.replace_range(40..41, if &key[40..41] == "x" { "y" } else { "x" });
    for bad in [
        "garbage",
        typo.as_str(),
        unknown.as_str(),
        wrong_secret.as_str(),
    ] {
        let response = app.get("/api/v1/jobs", bad).await;
        assert_eq!(unauthenticated_body(response).await, reference, "key {bad}");
    }
}

#[tokio::test]
async fn keys_work_as_bearer_tokens_but_never_from_the_query_string() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let bearer = app
        .client
        .get(app.url("/api/v1/jobs"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    for param in ["api_key", "key", "access_token"] {
        let query = app
            .client
            .get(app.url(&format!("/api/v1/jobs?{param}={key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(query.status(), StatusCode::UNAUTHORIZED, "{param}");
    }
}

#[tokio::test]
async fn a_missing_scope_is_named_in_the_403() {
    let app = TestApp::spawn().await;
    let (_, reader) = app.project_with_key(&["jobs:read"]).await;
    let response = app
        .post("/api/v1/jobs", &reader, json!({"kind": "render"}))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = problem(response).await;
    assert!(body["detail"].as_str().unwrap().contains("jobs:write"));
    let worker_only = app.post("/api/v1/worker/lease", &reader, json!({})).await;
    assert_eq!(worker_only.status(), StatusCode::FORBIDDEN);
    let admin_only = app.get("/api/v1/admin/projections", &reader).await;
    assert_eq!(admin_only.status(), StatusCode::FORBIDDEN);
    let projects = app
        .post("/api/v1/projects", &reader, json!({"name": "x"}))
        .await;
    assert_eq!(projects.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn another_projects_jobs_are_not_found_for_every_operation() {
    let app = TestApp::spawn().await;
    let (project_a, key_a) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let (project_b, key_b) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker_b = app.create_key(Some(project_b), &["jobs:work"]).await;
    let id = app.submit_job(&key_a, json!({"kind": "render"})).await;

    for path in ["", "/progress", "/result", "/events"] {
        let response = app.get(&format!("/api/v1/jobs/{id}{path}"), &key_b).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    for action in ["cancel", "approve", "heartbeat", "complete"] {
        let response = app
            .post(&format!("/api/v1/jobs/{id}/{action}"), &key_b, json!({}))
            .await;
        assert!(
            matches!(
                response.status(),
                StatusCode::NOT_FOUND | StatusCode::FORBIDDEN
            ),
            "{action}: {}",
            response.status()
        );
    }
    let heartbeat = app
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &worker_b,
            json!({}),
        )
        .await;
    assert_eq!(heartbeat.status(), StatusCode::NOT_FOUND);
    // Project B's worker is never offered project A's job, and B's list does not show it.
    app.wait_for_projections().await;
    let lease = app.post("/api/v1/worker/lease", &worker_b, json!({})).await;
    assert_eq!(lease.status(), StatusCode::NO_CONTENT);
    let list: Value = app.get("/api/v1/jobs", &key_b).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // A project key cannot submit into another project.
    let cross = app
        .post(
            "/api/v1/jobs",
            &key_b,
            json!({"kind": "render", "project_id": project_a}),
        )
        .await;
    assert_eq!(cross.status(), StatusCode::BAD_REQUEST);
    // The job itself is untouched.
    let job: Value = app
        .get(&format!("/api/v1/jobs/{id}"), &key_a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "queued");
    // Projects: a key sees its own project only.
    let own = app
        .get(&format!("/api/v1/projects/{project_b}"), &key_b)
        .await;
    assert_eq!(own.status(), StatusCode::OK);
    let other = app
        .get(&format!("/api/v1/projects/{project_a}"), &key_b)
        .await;
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_keys_must_name_the_project_they_submit_to() {
    let app = TestApp::spawn().await;
    let project = app.create_project("p").await;
    let missing = app
        .post("/api/v1/jobs", &app.admin_key, json!({"kind": "render"}))
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(missing).await["errors"][0]["field"], "project_id");
    let unknown = app
        .post(
            "/api/v1/jobs",
            &app.admin_key,
            json!({"kind": "render", "project_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let ok = app
        .post(
            "/api/v1/jobs",
            &app.admin_key,
            json!({"kind": "render", "project_id": project}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
}
