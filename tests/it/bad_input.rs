//! Bad input gets a clear problem+json answer and appends nothing (DESIGN invariant 8).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{event_count, problem, TestApp};

async fn refused(
    app: &TestApp,
    request: reqwest::RequestBuilder,
    status: StatusCode,
    code: &str,
) -> Value {
    let before = event_count(&app.pool).await;
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body = problem(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        event_count(&app.pool).await,
        before,
        "a refused request appended events"
    );
    body
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_are_refused_without_effect() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let post = |body: &'static str| {
        app.request(reqwest::Method::POST, "/api/v1/jobs", &key)
            .header("content-type", "application/json")
            .body(body)
    };
    refused(
        &app,
        post("{\"kind\": "),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    let unknown = refused(
        &app,
        post(r#"{"kind": "a", "colour": "red"}"#),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{unknown}"
    );
    // An array for the body's object (which serde alone would read field by field).
    let listed = refused(
        &app,
        post(r#"["render"]"#),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    assert_eq!(listed["errors"][0]["field"], "body", "{listed}");
    let message = listed["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("expected an object"), "{listed}");
    refused(
        &app,
        post(r#"{"kind": 5}"#),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    refused(
        &app,
        post(r#"{"kind": "a", "priority": "high"}"#),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    let invalid = refused(
        &app,
        post(r#"{"kind": "Not A Kind", "priority": 12, "max_attempts": 0}"#),
        StatusCode::BAD_REQUEST,
        "VALIDATION_FAILED",
    )
    .await;
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["kind", "priority", "max_attempts"]);
}

#[tokio::test]
async fn wrong_content_types_and_oversized_bodies_are_refused() {
    let app = TestApp::spawn_with(|config| config.http.max_body_bytes = 4096).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let text = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "text/plain")
        .body(r#"{"kind": "render"}"#);
    refused(
        &app,
        text,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;

    let big = json!({"kind": "render", "input": {"blob": "x".repeat(5000)}});
    let declared = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .json(&big);
    refused(
        &app,
        declared,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;

    // Without Content-Length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"kind\": \"render\", \"input\": {\"blob\": \"".to_vec()),
        Ok(vec![b'x'; 5000]),
        Ok(b"\"}}".to_vec()),
    ];
    let chunked = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    refused(
        &app,
        chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
}

#[tokio::test]
async fn invalid_transitions_answer_409_and_append_nothing() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let id = app.submit_job(&key, json!({"kind": "render"})).await;
    let approve = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{id}/approve"),
            &key,
        )
        .json(&json!({}));
    let body = refused(
        &app,
        approve,
        StatusCode::CONFLICT,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("queued"));
    let cancel = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &key, json!({}))
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let again = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{id}/cancel"),
            &key,
        )
        .json(&json!({}));
    refused(
        &app,
        again,
        StatusCode::CONFLICT,
        "INVALID_STATE_TRANSITION",
    )
    .await;
    let result = app.request(
        reqwest::Method::GET,
        &format!("/api/v1/jobs/{id}/result"),
        &key,
    );
    refused(&app, result, StatusCode::CONFLICT, "JOB_NOT_SUCCEEDED").await;
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_answer_problems() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    refused(
        &app,
        app.request(reqwest::Method::GET, "/api/v1/nothing", &key),
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    )
    .await;
    refused(
        &app,
        app.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{}", uuid::Uuid::now_v7()),
            &key,
        ),
        StatusCode::NOT_FOUND,
        "JOB_NOT_FOUND",
    )
    .await;
    let malformed = refused(
        &app,
        app.request(reqwest::Method::GET, "/api/v1/jobs/not-a-uuid", &key),
        StatusCode::BAD_REQUEST,
        "INVALID_PARAMETER",
    )
    .await;
    assert_eq!(
        malformed["errors"][0]["field"], "id",
        "named as the route names it"
    );
    refused(
        &app,
        app.request(reqwest::Method::GET, "/api/v1/jobs?limit=500", &key),
        StatusCode::BAD_REQUEST,
        "VALIDATION_FAILED",
    )
    .await;
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_cut_off_by_the_request_timeout() {
    let app = TestApp::spawn_with(|config| config.http.request_timeout_seconds = 1).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    sender.send(Ok(b"{\"kind\": ".to_vec())).await.unwrap();
    let stream = futures::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let before = event_count(&app.pool).await;
    let started = std::time::Instant::now();
    let response = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(problem(response).await["code"], "REQUEST_TIMEOUT");
    assert_eq!(event_count(&app.pool).await, before);
    drop(sender);
}

#[tokio::test]
async fn oversized_free_text_fields_are_refused() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let id = app.submit_job(&key, json!({"kind": "render"})).await;
    app.lease(&worker, json!({})).await.unwrap();
    let beat = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &worker,
        )
        .json(&json!({"progress": 10, "stage": "s".repeat(101)}));
    let body = refused(&app, beat, StatusCode::BAD_REQUEST, "VALIDATION_FAILED").await;
    assert_eq!(body["errors"][0]["field"], "stage");
    let fail = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{id}/fail"),
            &worker,
        )
        .json(&json!({"error": ""}));
    refused(&app, fail, StatusCode::BAD_REQUEST, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn text_holding_a_nul_character_is_refused_before_it_reaches_the_log() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    // PostgreSQL's `json` would store it, but no `jsonb` read model could ever take it.
    let body = refused(
        &app,
        app.request(reqwest::Method::POST, "/api/v1/jobs", &key)
            .header("content-type", "application/json")
            .body(r#"{"kind": "a", "input": {"s": "a\u0000b"}}"#),
        StatusCode::BAD_REQUEST,
        "INVALID_BODY",
    )
    .await;
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("NUL"));
    // An escaped backslash followed by "u0000" is ordinary text.
    let id = app
        .submit_job(&key, json!({"kind": "a", "input": {"s": "\\u0000"}}))
        .await;
    app.wait_for_projections().await;
    let job: Value = app
        .get(&format!("/api/v1/jobs/{id}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["input"]["s"], "\\u0000");
}

#[tokio::test]
async fn a_method_a_route_does_not_answer_is_told_which_it_does() {
    let app = TestApp::spawn().await;
    let cancel = "/api/v1/jobs/0193a000-0000-7000-8000-000000000001/cancel";
    for (method, path, allow) in [
        ("DELETE", "/api/v1/jobs", "GET, HEAD, POST"),
        ("FOO", "/api/v1/jobs", "GET, HEAD, POST"),
        ("GET", cancel, "POST"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.request(method, path, &app.admin_key).send().await;
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(response.headers()["allow"], allow, "{path}");
        assert_eq!(problem(response).await["code"], "METHOD_NOT_ALLOWED");
    }
    // As `Allow` says, a GET route answers HEAD.
    let head = app.request(reqwest::Method::HEAD, "/api/v1/jobs", &app.admin_key);
    assert_eq!(head.send().await.unwrap().status(), StatusCode::OK);
    // So do the system routes outside the API, which answer nothing else.
    for path in [
        "/health",
        "/live",
        "/ready",
        "/health/detailed",
        "/openapi.json",
    ] {
        for (method, status) in [
            (reqwest::Method::GET, StatusCode::OK),
            (reqwest::Method::HEAD, StatusCode::OK),
            (reqwest::Method::PUT, StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let response = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await;
            let response = response.unwrap();
            assert_eq!(response.status(), status, "{method} {path}");
            if status == StatusCode::METHOD_NOT_ALLOWED {
                assert_eq!(response.headers()["allow"], "GET, HEAD", "{path}");
            }
        }
    }
}

/// Names are shown in lists, logs and CSV exports: a control character in a project's or a
/// key's name is refused, and nothing is recorded.
#[tokio::test]
async fn names_with_control_characters_are_refused() {
    let app = TestApp::spawn().await;
    let before = event_count(&app.pool).await;
    for (path, body) in [
        ("/api/v1/projects", json!({"name": "render\nfarm"})),
        (
            "/api/v1/api-keys",
            json!({"name": "ci\u{1b}[31m", "scopes": ["jobs:read"]}),
        ),
    ] {
        let refused = app.post(path, &app.admin_key, body.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        let refused = problem(refused).await;
        assert_eq!(refused["errors"][0]["field"], "name", "{refused}");
    }
    assert_eq!(event_count(&app.pool).await, before);
}
