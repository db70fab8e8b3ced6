//! Replays running side by side on one endpoint: the dispatcher gives deliveries it claimed over
//! the endpoint's cap back to the queue while the replays rewrite the same rows. A release that
//! lost a deadlock used to be dropped, leaving those deliveries leased, unsent, until their
//! lease ran out (25 s here); now it locks in the replays' order and is tried again, so every
//! round is sent well within the lease (20 s allows for a replay that lost a deadlock and was
//! resumed). (Before the fix, at least one round in four stalled for
//! the lease in each of two runs; after it, every round took 1–2.5 s.)

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn parallel_replays_of_one_endpoint_leave_no_delivery_waiting_out_a_lease() {
    // A 10 s request timeout makes the dispatcher's lease 25 s (`lease_for`).
    let app = TestApp::spawn_with(|c| c.webhooks.request_timeout_seconds = 10).await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    for _ in 0..20 {
        app.submit_job(&key, json!({"kind": "a"})).await;
    }
    let (id, _) = endpoint(&app, project, &receiver.url, &["*"]).await;
    app.wait_for_projections().await;
    let count = |sql: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for round in 0..4 {
        let started = Instant::now();
        let mut replays = Vec::new();
        for _ in 0..5 {
            let replay = app
                .request(
                    Method::POST,
                    &format!("/api/v1/webhooks/{id}/replay"),
                    &app.admin_key,
                )
                .json(&json!({"from_position": 0}))
                .send();
            replays.push(tokio::spawn(replay));
        }
        for replay in replays {
            assert_eq!(
                replay.await.unwrap().unwrap().status(),
                StatusCode::ACCEPTED
            );
        }
        loop {
            let pending =
                count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'").await;
            let running =
                count("SELECT count(*) FROM webhook_replays WHERE status = 'running'").await;
            if pending == 0 && running == 0 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "round {round}: {pending} deliveries still pending after 20 s (a lease is 25 s)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(receiver.all().len() >= 4 * 20, "every round was sent");
}
