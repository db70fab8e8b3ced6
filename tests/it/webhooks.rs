//! Webhooks end to end against a real local receiver: routing by project and event type,
//! signatures checked by the test's own implementation of the specification, retries through a
//! flaky receiver, secret rotation, 410 disabling, replay with the original ids, resend, and
//! the SSRF guard.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
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

fn types_of(received: &[crate::support::receiver::Received]) -> Vec<String> {
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
async fn a_receiver_that_fails_half_the_time_still_gets_everything() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    receiver.behaviour.flaky.store(true, Ordering::SeqCst);
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    let mut jobs = BTreeSet::new();
    for _ in 0..6 {
        jobs.insert(
            app.submit_job(&key, json!({"kind": "render"}))
                .await
                .to_string(),
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: BTreeSet<String> = receiver
            .all()
            .iter()
            .map(|r| r.json()["data"]["job_id"].as_str().unwrap().to_owned())
            .collect();
        if seen == jobs {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} arrived",
            seen.len(),
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The delivery log shows the failed attempts and the final success.
    let list: Value = app
        .get(
            &format!("/api/v1/webhooks/{id}/deliveries?status=succeeded"),
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 6);
    let retried = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["attempts"].as_i64() > Some(1))
        .expect("some delivery was retried");
    let delivery: Value = app
        .get(
            &format!(
                "/api/v1/webhooks/{id}/deliveries/{}",
                retried["id"].as_str().unwrap()
            ),
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    let attempts = delivery["attempts_log"].as_array().unwrap();
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["error_class"], "http_status");
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
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
async fn a_410_disables_the_endpoint_and_others_hear_of_it() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let (gone, watcher) = (Receiver::start().await, Receiver::start().await);
    gone.behaviour.status.store(410, Ordering::SeqCst);
    let (id, _) = endpoint(&app, project, &gone.url, &["job.queued"]).await;
    endpoint(&app, project, &watcher.url, &["webhook_endpoint.disabled"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let heard = watcher.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(types_of(&heard), ["webhook_endpoint.disabled"]);
    assert_eq!(
        heard[0].json()["data"]["webhook_endpoint_id"],
        id.to_string()
    );
    let endpoint: Value = app
        .get(&format!("/api/v1/webhooks/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(endpoint["enabled"], false);
    assert!(endpoint["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
}

#[tokio::test]
async fn a_replay_resends_with_the_original_ids_and_fills_in_what_a_disabled_endpoint_missed() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;
    let original_id = first[0].webhook_id.clone();

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
    let progress: Value = app
        .get(&location, &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(progress["status"], "completed");
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

/// `herald serve` as its own process, delivering webhooks to the local receivers quickly.
async fn serve(database_url: &str) -> (tokio::process::Child, String) {
    crate::support::herald_serve(
        database_url,
        &[
            ("HERALD_WEBHOOKS_ALLOW_CIDRS", "127.0.0.1/32"),
            ("HERALD_WEBHOOKS_RETRY_SCHEDULE", "0,1,1,1,1,1"),
            ("HERALD_WEBHOOKS__REQUEST_TIMEOUT_SECONDS", "2"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_server_killed_mid_delivery_delivers_after_a_restart() {
    let url = crate::support::db::fresh_database().await;
    let admin = crate::projections::herald(
        &url,
        &["keys", "create", "--name", "admin", "--scopes", "admin"],
    )
    .await;
    let admin = String::from_utf8(admin.stdout).unwrap().trim().to_owned();
    let receiver = Receiver::start().await;
    receiver.behaviour.delay_ms.store(30_000, Ordering::SeqCst);
    let (mut first, base) = serve(&url).await;
    let client = crate::support::http_client();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .header("X-API-Key", &admin)
            .json(&body)
            .send()
    };
    let project: Value = post("/api/v1/projects", json!({"name": "p"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let project = project["id"].as_str().unwrap().to_owned();
    let created = post(
        "/api/v1/webhooks",
        json!({"url": receiver.url, "event_types": ["job.queued"], "project_id": project}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let job: Value = post("/api/v1/jobs", json!({"kind": "k", "project_id": project}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // The first server has sent the delivery and waits for the (slow) receiver: kill it.
    for _ in 0..100 {
        if receiver.behaviour.calls.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        receiver.behaviour.calls.load(Ordering::SeqCst),
        1,
        "the delivery was not attempted"
    );
    first.kill().await.unwrap();
    receiver.behaviour.delay_ms.store(0, Ordering::SeqCst);

    // A new server picks the delivery up once its lease (twice the timeout plus 5 s) ends.
    let (mut second, _) = serve(&url).await;
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "the delivery was lost with the killed server");
    assert_eq!(got[0].json()["data"]["job_id"], job["id"]);
    second.kill().await.unwrap();
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_the_others_and_rate_limits_spread_deliveries() {
    let app = TestApp::spawn_with(|c| c.webhooks.per_endpoint_concurrency = 2).await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let (slow, fast, limited) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    slow.behaviour.delay_ms.store(1500, Ordering::SeqCst);
    endpoint(&app, project, &slow.url, &["job.queued"]).await;
    endpoint(&app, project, &fast.url, &["job.queued"]).await;
    let created = app
        .post("/api/v1/webhooks", &app.admin_key, json!({"url": limited.url, "event_types": ["job.queued"], "project_id": project, "rate_limit_per_second": 2}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let started = tokio::time::Instant::now();
    for _ in 0..12 {
        app.submit_job(&key, json!({"kind": "a"})).await;
    }
    let got = fast.wait_for(12, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 12);
    let fast_done = started.elapsed();
    // The slow receiver takes 1.5 s per message, two at a time: it needs about 9 s for all.
    assert!(slow.all().len() < 12, "the slow endpoint was not slower");
    assert!(
        slow.behaviour.calls.load(Ordering::SeqCst)
            <= 2 + 2 * (fast_done.as_millis() as u64 / 1500 + 1),
        "more than two at a time reached the slow endpoint"
    );
    let limited_all = limited.wait_for(12, Duration::from_secs(15)).await;
    assert_eq!(limited_all.len(), 12);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "12 messages at 2/s arrived in {:?}",
        started.elapsed()
    );
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
    }
}

#[tokio::test]
async fn an_endpoint_failing_past_the_limit_is_disabled_when_its_retries_run_out() {
    // No retries and a zero-length failing period: the first exhausted delivery disables it.
    let app = TestApp::spawn_with(|c| {
        c.webhooks.retry_schedule = "0".into();
        c.webhooks.disable_after_seconds = 0;
    })
    .await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let failing = Receiver::start().await;
    failing.behaviour.status.store(500, Ordering::SeqCst);
    let (id, _) = endpoint(&app, project, &failing.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let endpoint: Value = app
            .get(&format!("/api/v1/webhooks/{id}"), &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if endpoint["enabled"] == false {
            assert!(endpoint["disabled_reason"]
                .as_str()
                .unwrap()
                .contains("exhausted"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoint was not disabled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries: Value = app
        .get(&format!("/api/v1/webhooks/{id}/deliveries"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deliveries["data"][0]["status"], "failed");
    assert_eq!(deliveries["data"][0]["last_status"], 500);
}

#[tokio::test]
async fn an_endpoint_failing_for_less_than_the_limit_stays_enabled() {
    let app = TestApp::spawn_with(|c| c.webhooks.retry_schedule = "0".into()).await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let failing = Receiver::start().await;
    failing.behaviour.status.store(500, Ordering::SeqCst);
    let (id, _) = endpoint(&app, project, &failing.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let deliveries: Value = app
            .get(
                &format!("/api/v1/webhooks/{id}/deliveries?status=failed"),
                &app.admin_key,
            )
            .await
            .json()
            .await
            .unwrap();
        if !deliveries["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let endpoint: Value = app
        .get(&format!("/api/v1/webhooks/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        endpoint["enabled"], true,
        "disabled before failing for the configured period"
    );
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
    for _ in 0..200 {
        let progress: Value = app
            .get(&location, &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if progress["status"] == "completed" {
            return progress["queued"].as_i64().unwrap();
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
