//! Account-wide endpoints and the events that only they, or only time, produce: an admin's
//! endpoint with `"project_id": null` hears every project plus `user.created` and
//! `project.created`, and is invisible to project callers; the expiry sweeper records
//! `job.expired` and `api_key.expired` once and they are delivered like any other event.

use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::receiver::{signature_valid, Receiver};
use crate::support::{problem, TestApp};

fn sorted_types(received: &[crate::support::receiver::Received]) -> Vec<String> {
    let mut types: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    types
}

#[tokio::test]
async fn an_account_wide_endpoint_hears_every_project_and_the_accounts_own_events() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let response = app
        .post(
            "/api/v1/webhooks",
            &app.admin_key,
            json!({"url": receiver.url, "project_id": null,
                   "event_types": ["user.created", "project.created", "job.queued"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["project_id"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();

    let (project, key) = app
        .project_with_key(&["jobs:write", "webhooks:read", "webhooks:write"])
        .await;
    let (_other, other_key) = app.project_with_key(&["jobs:write"]).await;
    app.create_user("new@example.com", crate::support::PASSWORD, false)
        .await;
    app.submit_job(&key, json!({"kind": "render"})).await;
    app.submit_job(&other_key, json!({"kind": "render"})).await;

    let got = receiver.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(
        sorted_types(&got),
        [
            "job.queued",
            "job.queued",
            "project.created",
            "project.created",
            "user.created"
        ]
    );
    assert!(got.iter().all(|r| signature_valid(&secret, r)));
    let user_event = got
        .iter()
        .map(|r| r.json())
        .find(|body| body["type"] == "user.created")
        .unwrap();
    assert!(user_event["data"]["user_id"].is_string(), "{user_event}");

    // Project callers neither see it nor make one.
    let seen = app.get(&format!("/api/v1/webhooks/{id}"), &key).await;
    assert_eq!(seen.status(), StatusCode::NOT_FOUND);
    let listed: Value = app
        .get("/api/v1/webhooks", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"], json!([]));
    let refused = app
        .post(
            "/api/v1/webhooks",
            &key,
            json!({"url": receiver.url, "project_id": null, "event_types": ["*"]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let editor = app.member_token(project, "editor").await;
    let refused = app
        .as_user(Method::POST, "/api/v1/webhooks", &editor)
        .json(&json!({"url": receiver.url, "project_id": null, "event_types": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(refused).await["code"], "FORBIDDEN");
    let admin_view: Value = app
        .get(&format!("/api/v1/webhooks/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admin_view["project_id"], Value::Null);
}

#[tokio::test]
async fn jobs_past_retention_and_keys_past_expiry_are_expired_once_and_delivered() {
    let app = TestApp::spawn().await;
    let (project, key) = app
        .project_with_key(&["jobs:read", "jobs:write", "keys:read", "keys:write"])
        .await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let receiver = Receiver::start().await;
    crate::webhooks::endpoint(
        &app,
        project,
        &receiver.url,
        &["job.expired", "api_key.expired"],
    )
    .await;

    let finished = app.submit_job(&key, json!({"kind": "render"})).await;
    app.lease(&worker, json!({})).await.unwrap();
    let done = app
        .post(
            &format!("/api/v1/jobs/{finished}/complete"),
            &worker,
            json!({"result": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let waiting = app.submit_job(&key, json!({"kind": "render"})).await;
    let made: Value = app
        .post(
            "/api/v1/api-keys",
            &key,
            json!({"name": "short", "scopes": ["jobs:read"], "expires_in_days": 1}),
        )
        .await
        .json()
        .await
        .unwrap();
    let short_key = made["id"].as_str().unwrap().to_owned();
    app.wait_for_projections().await;

    // Retention is 24 h and the key lasts a day: a day and an hour later both are due.
    let sweeper = herald_api::expiry::ExpirySweeper::new(app.state.clone());
    let later = Utc::now() + chrono::Duration::hours(25);
    let swept = sweeper.run_once(Utc::now()).await.unwrap();
    assert_eq!((swept.jobs, swept.keys), (0, 0), "nothing is due yet");
    let swept = sweeper.run_once(later).await.unwrap();
    assert_eq!((swept.jobs, swept.keys), (1, 1));
    // Once: whether or not the read models have caught up.
    let swept = sweeper.run_once(later).await.unwrap();
    assert_eq!((swept.jobs, swept.keys), (0, 0));
    app.wait_for_projections().await;
    let swept = sweeper.run_once(later).await.unwrap();
    assert_eq!((swept.jobs, swept.keys), (0, 0));

    let job: Value = app
        .get(&format!("/api/v1/jobs/{finished}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded", "the outcome stays");
    assert!(job["expired_at"].is_string(), "{job}");
    let job: Value = app
        .get(&format!("/api/v1/jobs/{waiting}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["expired_at"], Value::Null);
    let history: Value = app
        .get(&format!("/api/v1/jobs/{finished}/events"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert!(history.to_string().contains("job.expired"), "{history}");

    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(sorted_types(&got), ["api_key.expired", "job.expired"]);
    let bodies: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let about_key = bodies.iter().find(|b| b["type"] == "api_key.expired");
    assert_eq!(about_key.unwrap()["data"]["api_key_id"], short_key.as_str());
    let about_job = bodies.iter().find(|b| b["type"] == "job.expired");
    assert_eq!(
        about_job.unwrap()["data"]["job_id"],
        finished.to_string().as_str()
    );
}

#[tokio::test]
async fn the_background_sweeper_records_a_rotated_keys_grace_end() {
    let app = TestApp::spawn_with(|config| config.jobs.expiry_interval_ms = 100).await;
    let (_project, key) = app.project_with_key(&["keys:read", "keys:write"]).await;
    let made: Value = app
        .post(
            "/api/v1/api-keys",
            &key,
            json!({"name": "old", "scopes": ["keys:read"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let old = made["id"].as_str().unwrap().to_owned();
    let rotated = app
        .post(
            &format!("/api/v1/api-keys/{old}/rotate"),
            &key,
            json!({"grace_period_seconds": 1}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let count = loop {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE event_type = 'api_key.expired' AND aggregate_id = $1",
        )
        .bind(&old)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if count > 0 || tokio::time::Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(count, 1, "the grace end was recorded by the running server");
    let view: Value = app
        .get(&format!("/api/v1/api-keys/{old}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "expired");
}
