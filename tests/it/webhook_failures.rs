//! Webhook deliveries that fail: a flaky receiver, a 410 that disables its endpoint, endpoints
//! failing past (and short of) the disabling limit, a slow endpoint beside fast ones, and a
//! server killed mid-delivery that delivers after its restart.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::{endpoint, types_of};

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
    for _ in 0..1_000 {
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
    let endpoint = once_a_delivery_failed(&app, id).await;
    assert_eq!(
        endpoint["enabled"], true,
        "disabled before failing for the configured period"
    );
}

#[tokio::test]
async fn an_old_endpoint_that_starts_failing_is_given_the_whole_period() {
    // Created six days ago, its first message fails now and its retries run out: it has been
    // failing for moments, not for the five days of `disable_after_seconds`.
    let app = TestApp::spawn_with(|c| c.webhooks.retry_schedule = "0".into()).await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let failing = Receiver::start().await;
    failing.behaviour.status.store(500, Ordering::SeqCst);
    let (id, _) = endpoint(&app, project, &failing.url, &["job.queued"]).await;
    app.wait_for_projections().await;
    sqlx::query(
        "UPDATE webhook_endpoints SET created_at = now() - interval '6 days' WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    app.submit_job(&key, json!({"kind": "a"})).await;
    let endpoint = once_a_delivery_failed(&app, id).await;
    assert_eq!(endpoint["enabled"], true, "{endpoint}");
}

/// The endpoint `id` as it stands a moment after one of its deliveries failed for good (its
/// retries used up), which is when the dispatcher decides whether to disable it.
async fn once_a_delivery_failed(app: &TestApp, id: uuid::Uuid) -> Value {
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
        if !failed["data"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery did not fail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.get(&format!("/api/v1/webhooks/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap()
}
