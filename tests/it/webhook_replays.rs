//! Replaying and resending webhooks: a replay sends past events again with their original ids
//! (and fills in what a disabled endpoint missed), honours its filters, and a resend sends one
//! delivery once, now.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn a_replay_resends_with_the_original_ids_and_fills_in_what_a_disabled_endpoint_missed() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;
    let original_id = first[0].webhook_id.clone();
    // Sent: no next attempt is due any more.
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let sent = loop {
        let list: Value = app
            .get(&deliveries, &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if list["data"][0]["status"] == "succeeded" {
            break list["data"][0].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sent["next_attempt_at"], Value::Null, "{sent}");

    let disable = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &app.admin_key,
        )
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), StatusCode::OK);
    app.wait_for_projections().await;
    let missed = app.submit_job(&key, json!({"kind": "b"})).await;
    app.wait_for_projections().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.all().len(),
        1,
        "a disabled endpoint got a delivery"
    );

    let enable = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &app.admin_key,
        )
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(enable.status(), StatusCode::OK);
    let replay = app
        .post(
            &format!("/api/v1/webhooks/{id}/replay"),
            &app.admin_key,
            json!({"from_position": 0}),
        )
        .await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    let location = replay.headers()["location"].to_str().unwrap().to_owned();
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    let jobs: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        jobs.contains(&missed.to_string()),
        "the missed event was not replayed: {jobs:?}"
    );
    let resent: Vec<&str> = got[1..]
        .iter()
        .filter(|r| r.json()["data"]["job_id"] == first[0].json()["data"]["job_id"])
        .map(|r| r.webhook_id.as_str())
        .collect();
    assert_eq!(
        resent,
        [original_id.as_str()],
        "a replayed message keeps its webhook-id"
    );
    // The deliveries can be sent before the replay's own progress is marked completed.
    let progress = completed(&app, &location).await;
    assert_eq!(progress["queued"], 2);
}

#[tokio::test]
async fn resend_sends_once_now_and_records_a_manual_attempt() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;
    let list: Value = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let delivery = list["data"][0]["id"].as_str().unwrap().to_owned();
    let resend = app
        .post(
            &format!("/api/v1/webhooks/{id}/deliveries/{delivery}/resend"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(resend.status(), StatusCode::OK);
    let attempt: Value = resend.json().await.unwrap();
    assert_eq!(attempt["succeeded"], true);
    assert_eq!(attempt["manual"], true);
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].webhook_id, first[0].webhook_id);
    assert_eq!(got[1].body, first[0].body);
    // With the endpoint's header, its value opened (it is stored sealed).
    assert_eq!(got[1].custom.as_deref(), Some("hello"));
}

/// Starts a replay and waits for it to finish; returns how many deliveries it queued.
async fn replay(app: &TestApp, id: Uuid, body: Value) -> i64 {
    let started = app
        .post(
            &format!("/api/v1/webhooks/{id}/replay"),
            &app.admin_key,
            body,
        )
        .await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    completed(app, &location).await["queued"].as_i64().unwrap()
}

/// The progress at `location` once the replay is completed (10 s at most).
async fn completed(app: &TestApp, location: &str) -> Value {
    for _ in 0..400 {
        let progress: Value = app
            .get(location, &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if progress["status"] == "completed" {
            return progress;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the replay did not finish");
}

#[tokio::test]
async fn replays_honour_since_event_types_and_only_failed() {
    let app = TestApp::spawn_with(|c| c.webhooks.retry_schedule = "0".into()).await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(
        &app,
        project,
        &receiver.url,
        &["job.queued", "job.cancelled"],
    )
    .await;
    app.submit_job(&key, json!({"kind": "early"})).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = chrono::Utc::now();
    // From here the receiver fails, and with no retries those deliveries fail for good.
    receiver.behaviour.status.store(500, Ordering::SeqCst);
    let late = app.submit_job(&key, json!({"kind": "late"})).await;
    app.post(&format!("/api/v1/jobs/{late}/cancel"), &key, json!({}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let failed: Value = app
            .get(
                &format!("/api/v1/webhooks/{id}/deliveries?status=failed"),
                &app.admin_key,
            )
            .await
            .json()
            .await
            .unwrap();
        if failed["data"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late deliveries did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.behaviour.status.store(0, Ordering::SeqCst);

    // Each replay is awaited until its messages arrived, so none merges into the next.
    let only_failed = replay(&app, id, json!({"from_position": 0, "only_failed": true})).await;
    assert_eq!(only_failed, 2, "only the two failed deliveries");
    assert_eq!(receiver.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    let cancelled_only = replay(
        &app,
        id,
        json!({"since": since, "event_types": ["job.cancelled"]}),
    )
    .await;
    assert_eq!(cancelled_only, 1);
    assert_eq!(receiver.wait_for(4, Duration::from_secs(10)).await.len(), 4);
    let since_only = replay(&app, id, json!({"since": since})).await;
    assert_eq!(since_only, 2, "the early job is before `since`");
    let got = receiver.wait_for(6, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 6);
    let late_ones = got
        .iter()
        .filter(|r| r.json()["data"]["job_id"] == late.to_string())
        .count();
    assert_eq!(late_ones, 5, "2 + 1 + 2 replayed messages of the late job");
    let bad = app
        .post(
            &format!("/api/v1/webhooks/{id}/replay"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
