//! Statements whose answer is lost after PostgreSQL committed them (a relay in front of the
//! database keeps the answer and cuts the connection, `support::lossy`). The writer must not
//! tell their callers they failed: a submission is answered 202 (not 5xx with its job in the
//! log, which a retry would submit twice), a read 200 (not 503 with a record saying 200), and
//! nothing is written twice. The old backend is ended before the logs are read.

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use herald_api::audit::{self, AuditLog};
use herald_store::Appender;
use reqwest::StatusCode;
use serde_json::json;

use crate::audit_shared_commit::sharing_a_commit;
use crate::audit_writers::{assert_whole_chain_holds, record_at};
use crate::support::lossy::LossyRelay;
use crate::support::{db, test_config, TestApp};

/// A server whose every connection goes through a relay that can lose the writer's answers.
async fn behind_lossy_relay() -> (LossyRelay, TestApp) {
    let database_url = db::fresh_database().await;
    let relay = LossyRelay::start(&database_url, Some(b"audit writer")).await;
    let app = TestApp::start(test_config(&relay.url())).await;
    (relay, app)
}

/// How many times the request log holds the call answered with `response`.
async fn records_of(app: &TestApp, response: &reqwest::Response) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM request_log WHERE request_id = $1")
        .bind(response.headers()["x-request-id"].to_str().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn chain_holds(app: &TestApp) {
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), None, None)
        .await
        .unwrap();
    assert_eq!(broken, None);
}

#[tokio::test]
async fn a_submission_whose_events_answer_is_lost_is_accepted_once() {
    let (relay, app) = behind_lossy_relay().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    // Once, so the writer's statements are prepared: the lost answer is then the commit's.
    app.submit_job(&key, json!({"kind": "render"})).await;
    relay.lose_next_answer_holding("INSERT 0 1");
    let response = app
        .post("/api/v1/jobs", &key, json!({"kind": "render"}))
        .await;
    assert!(relay.answer_lost());
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(records_of(&app, &response).await, 1);
    let job: serde_json::Value = response.json().await.unwrap();
    let submitted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'job.queued'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(submitted, 2, "the job went into the log once");
    let read = app
        .get(
            &format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()),
            &key,
        )
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    chain_holds(&app).await;
}

#[tokio::test]
async fn a_read_whose_records_answer_is_lost_is_answered_once_recorded() {
    let (relay, app) = behind_lossy_relay().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let id = app.submit_job(&key, json!({"kind": "render"})).await;
    let path = format!("/api/v1/jobs/{id}");
    assert_eq!(app.get(&path, &key).await.status(), StatusCode::OK);
    relay.lose_next_answer_holding("INSERT 0 1");
    let response = app.get(&path, &key).await;
    assert!(relay.answer_lost());
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(records_of(&app, &response).await, 1);
    // The writer goes on from the end it now knows, on one backend: the old one is gone.
    let next = app.get(&path, &key).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(records_of(&app, &next).await, 1);
    chain_holds(&app).await;
    let writers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
          WHERE datname = current_database() AND application_name LIKE '%audit writer'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(writers, 1);
}

/// An aggregate type no projection reads.
const TYPE: &str = "lost_answer_test";

fn event(aggregate: &str, note: &str) -> SerializedEvent {
    SerializedEvent::new(
        aggregate.to_owned(),
        1,
        TYPE.to_owned(),
        "Noted".to_owned(),
        "1".to_owned(),
        json!({"note": note}),
        json!({}),
    )
}

async fn stored_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(TYPE)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shared_statement_whose_answer_is_lost_commits_both_logs_once() {
    let app = TestApp::spawn().await;
    let relay = LossyRelay::start(&app.database_url, Some(b"audit writer")).await;
    let pool = herald_api::startup::connect(&relay.url(), 2).await.unwrap();
    let (appender, events) = Appender::detached();
    let log = AuditLog::start(pool, crate::support::chain_key(), Some(events));
    for n in 0..2 {
        if n == 1 {
            // One event and one record.
            relay.lose_next_answer_holding("SELECT 2");
        }
        // Queued together, so they share a statement (as in `audit_shared_commit`).
        let record = {
            let log = log.clone();
            tokio::spawn(async move {
                log.record(record_at(format!("lost-{n}"), chrono::Utc::now()))
                    .await
            })
        };
        let appended = {
            let (appender, event) = (appender.clone(), event(&format!("lost-{n}"), "ours"));
            tokio::spawn(async move { appender.append(TYPE, &event).await })
        };
        let (appended, committed) = (appended.await.unwrap(), record.await.unwrap());
        assert!(appended.is_ok(), "{appended:?}");
        assert!(committed);
    }
    assert!(relay.answer_lost());
    assert_eq!(stored_events(&app).await, 2);
    assert_whole_chain_holds(&app, "lost-", 2).await;
    assert_eq!(sharing_a_commit(&app, TYPE).await, 2);
}

#[tokio::test]
async fn the_appenders_own_writer_settles_a_lost_batch_by_what_is_stored() {
    let app = TestApp::spawn().await;
    let relay = LossyRelay::start(&app.database_url, None).await;
    let pool = relay.single_connection_pool().await;
    let appender = Appender::start(pool);
    appender.append(TYPE, &event("warm", "ours")).await.unwrap();
    relay.lose_next_answer_holding("INSERT 0 1");
    let appended = appender.append(TYPE, &event("committed", "ours")).await;
    assert!(relay.answer_lost());
    assert!(appended.is_ok(), "{appended:?}");
    // A sequence number another writer took: the lost statement inserted nothing, and what is
    // stored is not this append's, so it is a conflict, as it would have been.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         VALUES ($1, 'taken', 1, 'Noted', '1', '{\"note\":\"theirs\"}', '{}')",
    )
    .bind(TYPE)
    .execute(&app.pool)
    .await
    .unwrap();
    relay.lose_next_answer_holding("INSERT 0 0");
    let conflicted = appender.append(TYPE, &event("taken", "ours")).await;
    assert!(relay.answer_lost());
    assert!(
        matches!(conflicted, Err(PersistenceError::OptimisticLockError)),
        "{conflicted:?}"
    );
    assert_eq!(stored_events(&app).await, 3);
}
