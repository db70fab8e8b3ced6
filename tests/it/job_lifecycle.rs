//! A job through its whole life over HTTP: submit, lease, heartbeat, complete, review; lease
//! expiry and retries; worker failures; cancellation seen by the worker; deletion.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

async fn progress_of(app: &TestApp, id: uuid::Uuid, key: &str) -> Value {
    let progress = app.get(&format!("/api/v1/jobs/{id}/progress"), key).await;
    assert_eq!(progress.status(), StatusCode::OK);
    progress.json().await.unwrap()
}

#[tokio::test]
async fn a_job_goes_from_submission_to_approval() {
    let app = TestApp::spawn().await;
    let (project, client) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;

    let id = app
        .submit_job(
            &client,
            json!({"kind": "captions.generate", "input": {"url": "s3://a.mp4"}}),
        )
        .await;
    let leased = app
        .lease(
            &worker,
            json!({"kinds": ["captions.generate"], "lease_seconds": 30}),
        )
        .await
        .unwrap();
    assert_eq!(leased["id"], id.to_string());
    assert_eq!(leased["status"], "running");
    assert_eq!(leased["attempt"], 1);
    assert!(leased["lease_expires_at"].is_string());

    let beat = app
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &worker,
            json!({"progress": 40, "stage": "transcribe"}),
        )
        .await;
    assert_eq!(beat.status(), StatusCode::OK);
    let beat: Value = beat.json().await.unwrap();
    assert_eq!(beat["cancel_requested"], false);

    let progress = progress_of(&app, id, &client).await;
    assert_eq!(progress["percent"], 40);
    assert_eq!(progress["stage"], "transcribe");

    // A bare heartbeat keeps the progress, and the 30 s lease the worker asked for (the
    // server's default is 300 s).
    let bare = app
        .post(&format!("/api/v1/jobs/{id}/heartbeat"), &worker, json!({}))
        .await;
    assert_eq!(bare.status(), StatusCode::OK);
    let bare: Value = bare.json().await.unwrap();
    let expires: chrono::DateTime<Utc> =
        bare["lease_expires_at"].as_str().unwrap().parse().unwrap();
    let left = (expires - Utc::now()).num_seconds();
    assert!((20..=31).contains(&left), "{left} s left");
    let progress = progress_of(&app, id, &client).await;
    assert_eq!(
        (progress["percent"].clone(), progress["stage"].clone()),
        (json!(40), json!("transcribe"))
    );
    // An empty stage clears it (and still keeps the percent).
    let cleared = app
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &worker,
            json!({"stage": ""}),
        )
        .await;
    assert_eq!(cleared.status(), StatusCode::OK);
    let progress = progress_of(&app, id, &client).await;
    assert_eq!(
        (progress["percent"].clone(), progress["stage"].clone()),
        (json!(40), Value::Null)
    );

    let done = app
        .post(
            &format!("/api/v1/jobs/{id}/complete"),
            &worker,
            json!({"result": {"captions": 12}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);

    let job: Value = app
        .get(&format!("/api/v1/jobs/{id}"), &client)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"], json!({"captions": 12}));
    assert_eq!(job["progress"]["percent"], 100);
    assert!(job["finished_at"].is_string() && job["expires_at"].is_string());

    let result: Value = app
        .get(&format!("/api/v1/jobs/{id}/result"), &client)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(result["result"]["captions"], 12);

    let approved = app
        .post(
            &format!("/api/v1/jobs/{id}/approve"),
            &client,
            json!({"comment": "ok"}),
        )
        .await;
    assert_eq!(approved.status(), StatusCode::OK);
    let approved: Value = approved.json().await.unwrap();
    assert_eq!(approved["review"]["decision"], "approved");

    let history: Value = app
        .get(&format!("/api/v1/jobs/{id}/events"), &client)
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "job.queued",
            "job.started",
            "job.progress",
            "job.progress",
            "job.progress",
            "job.succeeded",
            "job.approved"
        ]
    );
}

#[tokio::test]
async fn an_expired_lease_is_retried_until_max_attempts_then_fails() {
    let app = TestApp::spawn().await;
    let (project, client) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let id = app
        .submit_job(&client, json!({"kind": "render", "max_attempts": 2}))
        .await;
    let reconciler = herald_api::reconciler::LeaseReconciler::new(app.state.clone());

    for attempt in 1..=2 {
        let leased = app
            .lease(&worker, json!({"lease_seconds": 1}))
            .await
            .unwrap();
        assert_eq!(leased["attempt"], attempt);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The worker is too late: its lease has passed.
        let late = app
            .post(
                &format!("/api/v1/jobs/{id}/heartbeat"),
                &worker,
                json!({"progress": 5}),
            )
            .await;
        assert_eq!(late.status(), StatusCode::CONFLICT);
        assert_eq!(problem(late).await["code"], "LEASE_EXPIRED");
        app.wait_for_projections().await;
        assert_eq!(reconciler.run_once(Utc::now()).await.unwrap(), 1);
        let job: Value = app
            .get(&format!("/api/v1/jobs/{id}"), &client)
            .await
            .json()
            .await
            .unwrap();
        let expected = if attempt == 1 { "queued" } else { "failed" };
        assert_eq!(job["status"], expected, "after attempt {attempt}");
        // Taken back, the lease is still the worker's answer: expired, not "queued".
        let later = app
            .post(&format!("/api/v1/jobs/{id}/heartbeat"), &worker, json!({}))
            .await;
        assert_eq!(later.status(), StatusCode::CONFLICT);
        assert_eq!(
            problem(later).await["code"],
            "LEASE_EXPIRED",
            "after attempt {attempt}"
        );
    }
    // Nothing left to expire, and nothing left to lease.
    app.wait_for_projections().await;
    assert_eq!(reconciler.run_once(Utc::now()).await.unwrap(), 0);
    let none = app.post("/api/v1/worker/lease", &worker, json!({})).await;
    assert_eq!(none.status(), StatusCode::NO_CONTENT);

    let history: Value = app
        .get(&format!("/api/v1/jobs/{id}/events"), &client)
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "job.queued",
            "job.started",
            "job.retrying",
            "job.started",
            "job.failed"
        ]
    );
    assert_eq!(history["data"][2]["actor_type"], "system");
}

#[tokio::test]
async fn a_cancel_is_seen_by_the_worker_at_its_next_heartbeat() {
    let app = TestApp::spawn().await;
    let (project, client) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let id = app.submit_job(&client, json!({"kind": "render"})).await;
    app.lease(&worker, json!({})).await.unwrap();

    let cancelled = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), &client, json!({}))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let beat: Value = app
        .post(
            &format!("/api/v1/jobs/{id}/heartbeat"),
            &worker,
            json!({"progress": 60}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beat["cancel_requested"], true);
    let complete = app
        .post(
            &format!("/api/v1/jobs/{id}/complete"),
            &worker,
            json!({"result": {}}),
        )
        .await;
    assert_eq!(complete.status(), StatusCode::CONFLICT);
    let job: Value = app
        .get(&format!("/api/v1/jobs/{id}"), &client)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "cancelled");
}

#[tokio::test]
async fn worker_failures_requeue_when_retryable_and_fail_otherwise() {
    let app = TestApp::spawn().await;
    let (project, client) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let id = app.submit_job(&client, json!({"kind": "render"})).await;

    app.lease(&worker, json!({})).await.unwrap();
    let retry: Value = app
        .post(
            &format!("/api/v1/jobs/{id}/fail"),
            &worker,
            json!({"error": "gpu lost", "retryable": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(retry["status"], "queued");
    assert_eq!(retry["error"], "gpu lost");

    app.lease(&worker, json!({})).await.unwrap();
    let failed: Value = app
        .post(
            &format!("/api/v1/jobs/{id}/fail"),
            &worker,
            json!({"error": "bad input", "retryable": false}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempt"], 2);
}

#[tokio::test]
async fn another_worker_cannot_complete_a_job_it_does_not_hold() {
    let app = TestApp::spawn().await;
    let (project, client) = app.project_with_key(&["jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let intruder = app.create_key(Some(project), &["jobs:work"]).await;
    let id = app.submit_job(&client, json!({"kind": "render"})).await;
    app.lease(&worker, json!({})).await.unwrap();
    let stolen = app
        .post(&format!("/api/v1/jobs/{id}/complete"), &intruder, json!({}))
        .await;
    assert_eq!(stolen.status(), StatusCode::CONFLICT);
    assert_eq!(problem(stolen).await["code"], "LEASE_NOT_HELD");
}

#[tokio::test]
async fn a_deleted_job_disappears_from_reads_but_keeps_its_history() {
    let app = TestApp::spawn().await;
    let (_, client) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let id = app.submit_job(&client, json!({"kind": "render"})).await;
    let deleted = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/jobs/{id}"),
            &client,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/jobs/{id}"), &client)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    app.wait_for_projections().await;
    let list: Value = app.get("/api/v1/jobs", &client).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let history: Value = app
        .get(&format!("/api/v1/jobs/{id}/events"), &client)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_writes_to_one_job_are_retried_and_all_land() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let id = app.submit_job(&key, json!({"kind": "render"})).await;
    let writes = (0..20).map(|i| {
        app.request(
            reqwest::Method::PATCH,
            &format!("/api/v1/jobs/{id}/metadata"),
            &key,
        )
        .json(&json!({"metadata": {format!("k{i}"): "v"}}))
        .send()
    });
    for response in futures::future::join_all(writes).await {
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    let job: Value = app
        .get(&format!("/api/v1/jobs/{id}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["metadata"].as_object().unwrap().len(), 20);
}

#[tokio::test]
async fn concurrent_workers_never_lease_the_same_job() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let mut submitted = std::collections::HashSet::new();
    for _ in 0..8 {
        submitted.insert(
            app.submit_job(&key, json!({"kind": "render"}))
                .await
                .to_string(),
        );
    }
    app.wait_for_projections().await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        workers.push(app.create_key(Some(project), &["jobs:work"]).await);
    }
    let leases = workers
        .iter()
        .map(|worker| app.post("/api/v1/worker/lease", worker, json!({})));
    let mut leased = std::collections::HashSet::new();
    for response in futures::future::join_all(leases).await {
        if response.status() == StatusCode::OK {
            let job: Value = response.json().await.unwrap();
            assert!(
                leased.insert(job["id"].as_str().unwrap().to_owned()),
                "a job was leased twice"
            );
        }
    }
    // Every lease that lost a race moved on to another job: all eight were handed out.
    assert_eq!(leased, submitted);
}
