//! A replay whose server stopped mid-way (its row left `running`, its lease run out) is taken
//! over by a running server and finished from where it stopped; one whose runner still holds
//! its lease is left alone.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn a_replay_left_running_by_a_stopped_server_is_finished_by_another() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    for kind in ["a", "b", "c"] {
        app.submit_job(&key, json!({ "kind": kind })).await;
    }
    assert_eq!(receiver.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    // Recorded as sent too (no longer leased), or a replay would leave them to their attempt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded' AND leased_until IS NULL",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if sent == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} recorded sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued: Vec<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events WHERE event_type = 'job.queued' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();

    // Two replays of the whole log as servers left them: one whose server stopped after its
    // first job's page (lease over), one whose server is still at it (lease ahead).
    let (abandoned, held, holder) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (replay, runner, lease) in [(abandoned, Uuid::now_v7(), "-1 s"), (held, holder, "1 h")] {
        sqlx::query(
            "INSERT INTO webhook_replays (id, endpoint_id, from_position, to_position, only_failed, \
                                          scanned_until, queued, status, runner, leased_until) \
             VALUES ($1, $2, 0, $3, false, $4, 1, 'running', $5, now() + $6::interval)",
        )
        .bind(replay)
        .bind(id)
        .bind(queued[2])
        .bind(queued[0])
        .bind(runner)
        .bind(lease)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    // The test servers look for abandoned replays every 2 s.
    let location = format!("/api/v1/webhooks/{id}/replays/{abandoned}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let progress = loop {
        let progress: Value = app
            .get(&location, &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if progress["status"] != "running" {
            break progress;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not taken over: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(progress["status"], "completed", "{progress}");
    assert_eq!(
        progress["queued"], 3,
        "one before the stop, two after: {progress}"
    );
    assert_eq!(progress["scanned_until"], queued[2], "{progress}");
    // The pages after the first were queued again, and only they.
    let again = receiver.wait_for(5, Duration::from_secs(10)).await;
    let mut jobs: Vec<String> = again[3..]
        .iter()
        .map(|r| r.json()["data"]["kind"].as_str().unwrap().to_owned())
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["b", "c"]);

    let other = app
        .get(
            &format!("/api/v1/webhooks/{id}/replays/{held}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["status"], "running", "{other}");
    let runner: Uuid = sqlx::query_scalar("SELECT runner FROM webhook_replays WHERE id = $1")
        .bind(held)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(runner, holder, "a replay still held was taken");
}

#[tokio::test]
async fn a_replay_stopped_by_a_database_error_runs_again_and_fails_after_five() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);
    // While `blocked` holds a row, PostgreSQL refuses every delivery a replay would queue.
    for statement in [
        "CREATE TABLE blocked (x int)",
        "INSERT INTO blocked VALUES (1)",
        "CREATE FUNCTION refuse_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF EXISTS (SELECT 1 FROM blocked) THEN RAISE EXCEPTION 'blocked by the test'; END IF; \
           RETURN NEW; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries \
           FOR EACH ROW EXECUTE FUNCTION refuse_deliveries()",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
    let start = || async {
        let started = app
            .post(
                &format!("/api/v1/webhooks/{id}/replay"),
                &app.admin_key,
                json!({"from_position": 0}),
            )
            .await;
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        let body: Value = started.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let until = |replay: Uuid, condition: &'static str| {
        let pool = app.pool.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            let sql = format!("SELECT {condition} FROM webhook_replays WHERE id = $1");
            while !sqlx::query_scalar::<_, bool>(&sql)
                .bind(replay)
                .fetch_one(&pool)
                .await
                .unwrap()
            {
                assert!(tokio::time::Instant::now() < deadline, "never {condition}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // One that keeps meeting the error: run again each time, `failed` at the fifth.
    let doomed = start().await;
    until(doomed, "failures >= 1 AND status = 'running'").await;
    sqlx::query("UPDATE webhook_replays SET failures = 4 WHERE id = $1")
        .bind(doomed)
        .execute(&app.pool)
        .await
        .unwrap();
    until(doomed, "status = 'failed' AND failures = 5").await;

    // One whose error passes: run again from its last page, and completed.
    let recovering = start().await;
    until(recovering, "failures >= 1 AND status = 'running'").await;
    sqlx::query("DELETE FROM blocked")
        .execute(&app.pool)
        .await
        .unwrap();
    until(recovering, "status = 'completed' AND queued = 1").await;
    assert_eq!(receiver.wait_for(2, Duration::from_secs(10)).await.len(), 2);
}
