//! Admin keys belong to no project: a key bound to one cannot be given the `admin` scope,
//! neither when it is created nor by a later change, and the refusal appends nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{event_count, problem, TestApp};

async fn refused_on_scopes(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = problem(response).await;
    assert_eq!(body["code"], "VALIDATION_FAILED", "{body}");
    assert_eq!(body["errors"][0]["field"], "scopes", "{body}");
}

#[tokio::test]
async fn a_key_bound_to_a_project_is_never_given_the_admin_scope() {
    let app = TestApp::spawn().await;
    let admin = app.create_key(None, &["admin"]).await;
    let project = app.create_project("studio").await;
    let before = event_count(&app.pool).await;
    let created = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "ops", "scopes": ["admin"], "project_id": project}),
        )
        .await;
    refused_on_scopes(created).await;
    assert_eq!(event_count(&app.pool).await, before, "nothing was appended");

    let bound = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "ci", "scopes": ["jobs:read"], "project_id": project}),
        )
        .await;
    assert_eq!(bound.status(), StatusCode::CREATED);
    let id = bound.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = event_count(&app.pool).await;
    let widened = app
        .request(Method::PATCH, &format!("/api/v1/api-keys/{id}"), &admin)
        .json(&json!({"scopes": ["admin"]}))
        .send()
        .await
        .unwrap();
    refused_on_scopes(widened).await;
    assert_eq!(event_count(&app.pool).await, before, "nothing was appended");

    // A key bound to no project still becomes an admin key.
    let unbound = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "root", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(unbound.status(), StatusCode::CREATED);
}
