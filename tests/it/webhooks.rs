//! Webhooks end to end against a real local receiver: routing by project and event type,
//! signatures checked by the test's own implementation of the specification, secret rotation,
//! endpoint validation and the SSRF guard. Failures and retries are in `webhook_failures`,
//! replays and resends in `webhook_replays`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::receiver::{signature_valid, Receiver};
use crate::support::{problem, TestApp};

/// Creates an endpoint with the admin key; returns (id, secret).
pub async fn endpoint(app: &TestApp, project: Uuid, url: &str, types: &[&str]) -> (Uuid, String) {
    let response = app
        .post("/api/v1/webhooks", &app.admin_key, json!({"url": url, "event_types": types, "project_id": project, "headers": {"X-Custom": "hello"}}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    (
        body["id"].as_str().unwrap().parse().unwrap(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

pub fn types_of(received: &[crate::support::receiver::Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_reach_the_matching_endpoints_of_their_project_signed() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let other_project = app.create_project("other").await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let (only_success, narrow) = (Receiver::start().await, Receiver::start().await);
    let (everything, elsewhere) = (Receiver::start().await, Receiver::start().await);
    let (_, narrow_secret) = endpoint(&app, project, &only_success.url, &["job.succeeded"]).await;
    let (_, _) = endpoint(&app, project, &narrow.url, &["job.cancelled"]).await;
    let (_, all_secret) = endpoint(&app, project, &everything.url, &["*"]).await;
    endpoint(&app, other_project, &elsewhere.url, &["*"]).await;

    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    let leased = app.lease(&worker, json!({})).await.unwrap();
    assert_eq!(leased["id"], job.to_string());
    let done = app
        .post(
            &format!("/api/v1/jobs/{job}/complete"),
            &worker,
            json!({"result": {"frames": 3}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);

    let got = only_success.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(types_of(&got), ["job.succeeded"]);
    let message = got[0].json();
    assert_eq!(message["data"]["job_id"], job.to_string());
    assert_eq!(message["data"]["project_id"], project.to_string());
    assert_eq!(message["data"]["result"]["frames"], 3);
    assert!(message["id"].as_str().unwrap().starts_with("evt_"));
    assert!(
        signature_valid(&narrow_secret, &got[0]),
        "signature does not verify"
    );
    assert!(
        !signature_valid(&all_secret, &got[0]),
        "another endpoint's secret verifies"
    );
    assert_eq!(got[0].custom.as_deref(), Some("hello"));

    // Its own `webhook_endpoint.created`, then the job's three events.
    let mut all = everything.wait_for(4, Duration::from_secs(10)).await;
    // Deliveries run concurrently, so arrival order is not the log's: the event id says it.
    all.sort_by_key(|r| {
        r.json()["id"].as_str().unwrap()[4..]
            .parse::<i64>()
            .unwrap()
    });
    let job_types: Vec<String> = types_of(&all)
        .into_iter()
        .filter(|t| t.starts_with("job."))
        .collect();
    assert_eq!(job_types, ["job.queued", "job.started", "job.succeeded"]);
    assert_eq!(types_of(&all)[0], "webhook_endpoint.created");
    assert!(all.iter().all(|r| signature_valid(&all_secret, r)));
    let ids: BTreeSet<&str> = all.iter().map(|r| r.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), all.len(), "webhook-ids are unique per message");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        narrow.all().is_empty(),
        "job.cancelled subscriber got {:?}",
        types_of(&narrow.all())
    );
    assert!(
        elsewhere
            .all()
            .iter()
            .all(|r| !r.json()["type"].as_str().unwrap().starts_with("job.")),
        "another project's endpoint saw this project's jobs"
    );
}

#[tokio::test]
async fn during_a_rotation_deliveries_carry_both_signatures_then_one() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, old_secret) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    let rotated = app
        .post(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            &app.admin_key,
            json!({"grace_period_seconds": 3600}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let new_secret = rotated.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.submit_job(&key, json!({"kind": "a"})).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].signature.split(' ').count(), 2);
    assert!(signature_valid(&old_secret, &got[0]) && signature_valid(&new_secret, &got[0]));

    let again = app
        .post(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            &app.admin_key,
            json!({"grace_period_seconds": 0}),
        )
        .await;
    let newest = again.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    app.submit_job(&key, json!({"kind": "b"})).await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].signature.split(' ').count(), 1);
    assert!(signature_valid(&newest, &got[1]) && !signature_valid(&new_secret, &got[1]));
}

#[tokio::test]
async fn the_ssrf_guard_refuses_internal_addresses() {
    let app = TestApp::spawn().await;
    let project = app.create_project("p").await;
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.2]/hook",
    ] {
        let (id, _) = endpoint(&app, project, url, &["*"]).await;
        let test = app
            .post(
                &format!("/api/v1/webhooks/{id}/test"),
                &app.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(test.status(), StatusCode::OK);
        let attempt: Value = test.json().await.unwrap();
        assert_eq!(attempt["succeeded"], false, "{url}");
        assert_eq!(
            attempt["error_class"], "refused_address",
            "{url}: {attempt}"
        );
    }
    // A name is checked when it resolves: without the allowlist, localhost is refused.
    let strict = TestApp::spawn_with(|c| c.webhooks.allow_cidrs.clear()).await;
    let strict_project = strict.create_project("p").await;
    let (id, _) = endpoint(&strict, strict_project, "http://localhost:9/hook", &["*"]).await;
    let attempt: Value = strict
        .post(
            &format!("/api/v1/webhooks/{id}/test"),
            &strict.admin_key,
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attempt["error_class"], "refused_address", "{attempt}");
    // The allowlisted receiver on 127.0.0.1 is reachable, and the test send is signed.
    let receiver = Receiver::start().await;
    let (id, secret) = endpoint(&app, project, &receiver.url, &["*"]).await;
    let attempt: Value = app
        .post(
            &format!("/api/v1/webhooks/{id}/test"),
            &app.admin_key,
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attempt["status_code"], 200);
    // The endpoint (subscribed to everything) may also have heard of its own creation.
    let got = receiver.all();
    let ping = got
        .iter()
        .find(|r| r.json()["type"] == "webhook.ping")
        .expect("the test send arrived");
    assert!(signature_valid(&secret, ping));
}

#[tokio::test]
async fn bad_endpoints_are_refused_and_other_projects_endpoints_are_invisible() {
    let app = TestApp::spawn().await;
    let (project, key) = app
        .project_with_key(&["webhooks:read", "webhooks:write"])
        .await;
    let before = crate::support::event_count(&app.pool).await;
    let bad = app
        .post(
            "/api/v1/webhooks",
            &key,
            json!({"url": "ftp://x", "event_types": ["job.exploded"]}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(bad).await["errors"].as_array().unwrap().len(), 2);
    // Credentials in the URL would be kept in the log as given: refused, with nothing kept.
    let credentials = app
        .post(
            "/api/v1/webhooks",
            &key,
            json!({"url": "https://user:s3cret@example.com/hook", "event_types": ["*"]}),
        )
        .await;
    assert_eq!(credentials.status(), StatusCode::BAD_REQUEST);
    let credentials = problem(credentials).await;
    assert_eq!(credentials["code"], "VALIDATION_FAILED");
    assert_eq!(credentials["errors"][0]["field"], "url");
    assert!(!credentials.to_string().contains("s3cret"));
    assert_eq!(crate::support::event_count(&app.pool).await, before);
    let other = app.create_project("other").await;
    let (theirs, _) = endpoint(&app, other, "https://example.com/hook", &["*"]).await;
    assert_eq!(
        app.get(&format!("/api/v1/webhooks/{theirs}"), &key)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let (mine, _) = endpoint(&app, project, "https://example.com/hook", &["*"]).await;
    app.wait_for_projections().await;
    let list: Value = app
        .get("/api/v1/webhooks", &key)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine.to_string()]);
    let catalogue: Value = app
        .get("/api/v1/event-types", &key)
        .await
        .json()
        .await
        .unwrap();
    assert!(catalogue["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["type"] == "job.succeeded" && t["example"]["type"] == "job.succeeded"));
}

#[tokio::test]
async fn every_event_type_reaches_its_subscribers_and_no_one_else() {
    let app = TestApp::spawn().await;
    let (project, key) = app
        .project_with_key(&[
            "jobs:read",
            "jobs:write",
            "keys:read",
            "keys:write",
            "webhooks:write",
        ])
        .await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let types = [
        "job.queued",
        "job.started",
        "job.progress",
        "job.succeeded",
        "job.approved",
        "job.metadata_updated",
        "job.deleted",
        "job.cancelled",
        "job.retrying",
        "job.failed",
        "api_key.created",
        "api_key.updated",
        "api_key.rotated",
        "api_key.revoked",
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.deleted",
    ];
    let mut receivers = Vec::new();
    for kind in types {
        let receiver = Receiver::start().await;
        endpoint(&app, project, &receiver.url, &[kind]).await;
        receivers.push((kind, receiver));
    }
    let call = |method: reqwest::Method, path: String, caller: &str, body: Value| {
        let request = app.request(method, &path, caller).json(&body);
        async move {
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
    };
    use reqwest::Method;
    // A job through review and deletion.
    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    app.lease(&worker, json!({})).await.unwrap();
    call(
        Method::POST,
        format!("/api/v1/jobs/{job}/heartbeat"),
        &worker,
        json!({"progress": 50}),
    )
    .await;
    call(
        Method::POST,
        format!("/api/v1/jobs/{job}/complete"),
        &worker,
        json!({"result": {}}),
    )
    .await;
    call(
        Method::POST,
        format!("/api/v1/jobs/{job}/approve"),
        &key,
        json!({"comment": "fine"}),
    )
    .await;
    call(
        Method::PATCH,
        format!("/api/v1/jobs/{job}/metadata"),
        &key,
        json!({"metadata": {"a": "b"}}),
    )
    .await;
    call(
        Method::DELETE,
        format!("/api/v1/jobs/{job}"),
        &key,
        json!({}),
    )
    .await;
    // A cancelled job, and one that is retried and then fails.
    let cancelled = app.submit_job(&key, json!({"kind": "other"})).await;
    call(
        Method::POST,
        format!("/api/v1/jobs/{cancelled}/cancel"),
        &key,
        json!({}),
    )
    .await;
    let failing = app
        .submit_job(&key, json!({"kind": "flaky", "max_attempts": 2}))
        .await;
    for _ in 0..2 {
        app.wait_for_projections().await;
        let leased = app
            .lease(&worker, json!({"kinds": ["flaky"]}))
            .await
            .unwrap();
        assert_eq!(leased["id"], failing.to_string());
        call(
            Method::POST,
            format!("/api/v1/jobs/{failing}/fail"),
            &worker,
            json!({"error": "boom", "retryable": true}),
        )
        .await;
    }
    // A key's life.
    let made: Value = app
        .post(
            "/api/v1/api-keys",
            &key,
            json!({"name": "k", "scopes": ["jobs:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    call(
        Method::PATCH,
        format!("/api/v1/api-keys/{id}"),
        &key,
        json!({"name": "renamed"}),
    )
    .await;
    call(
        Method::POST,
        format!("/api/v1/api-keys/{id}/rotate"),
        &key,
        json!({"grace_period_seconds": 60}),
    )
    .await;
    call(
        Method::POST,
        format!("/api/v1/api-keys/{id}/revoke"),
        &key,
        json!({}),
    )
    .await;
    // An endpoint's life.
    let (extra, _) = endpoint(&app, project, "http://127.0.0.1:9/hook", &["webhook.ping"]).await;
    call(
        Method::PATCH,
        format!("/api/v1/webhooks/{extra}"),
        &key,
        json!({"description": "x"}),
    )
    .await;
    call(
        Method::DELETE,
        format!("/api/v1/webhooks/{extra}"),
        &key,
        json!({}),
    )
    .await;

    app.wait_for_projections().await;
    for (kind, receiver) in &receivers {
        let got = receiver.wait_for(1, Duration::from_secs(10)).await;
        let seen: BTreeSet<String> = types_of(&got).into_iter().collect();
        assert_eq!(
            seen,
            BTreeSet::from([kind.to_string()]),
            "the {kind} subscriber"
        );
        // A key's HMAC is never sent, as the event log never shows it, nor an endpoint's
        // header values (the endpoints here send `X-Custom: hello`).
        for message in &got {
            let text = message.json().to_string();
            assert!(!text.contains("key_hash"), "{kind}: {text}");
            assert!(!text.contains("hello"), "{kind}: {text}");
            if kind.starts_with("webhook_endpoint.c") || kind.starts_with("webhook_endpoint.u") {
                assert_eq!(message.json()["data"]["headers"]["X-Custom"], "[redacted]");
            }
        }
    }
    // The event log shows the header names only, too.
    let logged: Value = app
        .get(
            "/api/v1/events?type=webhook_endpoint.created",
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(!logged["data"].as_array().unwrap().is_empty());
    for event in logged["data"].as_array().unwrap() {
        assert_eq!(event["data"]["headers"], json!({"X-Custom": "[redacted]"}));
    }
}
