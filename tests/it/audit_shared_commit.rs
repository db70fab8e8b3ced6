//! With the audit trail on, the request log's writer also appends the server's events, each
//! batch in one statement with the records waiting beside it. Below the HTTP layer, with two
//! writers as two replicas would run them: both logs stay whole (every record committed and
//! chained once, every event appended once, each conflict reported to exactly one caller), the
//! logs really share commits, a shared statement refused as a whole (another replica took
//! the same positions) still commits both parts, each on its own, and one refused for any other
//! reason fails its records at once but still commits its events, on a fresh connection.

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use futures::future::join_all;
use herald_api::audit::{self, AuditLog};
use herald_store::Appender;

use crate::audit_writers::{assert_whole_chain_holds, hold_next_position, record_at};
use crate::support::TestApp;

/// An aggregate type no projection reads.
const TYPE: &str = "shared_commit_test";

fn event(aggregate: &str) -> SerializedEvent {
    SerializedEvent::new(
        aggregate.to_owned(),
        1,
        TYPE.to_owned(),
        "Noted".to_owned(),
        "1".to_owned(),
        serde_json::json!({"aggregate": aggregate}),
        serde_json::json!({}),
    )
}

fn writers(app: &TestApp) -> [(Appender, std::sync::Arc<AuditLog>); 2] {
    [(); 2].map(|_| {
        let (appender, events) = Appender::detached();
        (
            appender,
            AuditLog::start(app.pool.clone(), crate::support::chain_key(), Some(events)),
        )
    })
}

/// Events of `aggregate_type` that were committed in the same transaction as some request
/// record.
pub(crate) async fn sharing_a_commit(app: &TestApp, aggregate_type: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE e.aggregate_type = $1 \
            AND EXISTS (SELECT 1 FROM request_log r WHERE r.xmin::text = e.xmin::text)",
    )
    .bind(aggregate_type)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn events_and_records_share_commits_and_both_logs_stay_whole() {
    let app = TestApp::spawn().await;
    let writers = writers(&app);
    // Every aggregate's first event is appended twice, once through each writer: one wins.
    let appends = (0..200).map(|n| {
        let (appender, _) = &writers[n % 2];
        let event = event(&format!("aggregate-{}", n / 2));
        async move { appender.append(TYPE, &event).await }
    });
    let records = (0..200).map(|n| {
        let (_, log) = &writers[n % 2];
        log.record(record_at(format!("shared-{n}"), chrono::Utc::now()))
    });
    let (appended, committed) = futures::join!(join_all(appends), join_all(records));
    assert!(committed.iter().all(|ok| *ok), "every record was committed");
    for pair in appended.chunks(2) {
        let wins = pair.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(
            wins, 1,
            "one of two appends of one sequence number wins: {pair:?}"
        );
        assert!(pair
            .iter()
            .any(|outcome| matches!(outcome, Err(PersistenceError::OptimisticLockError))));
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(TYPE)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 100);
    assert_whole_chain_holds(&app, "shared-", 200).await;
    assert!(
        sharing_a_commit(&app, TYPE).await > 0,
        "some events were committed with request records"
    );
}

#[tokio::test]
async fn a_shared_statement_refused_as_a_whole_commits_each_part_alone() {
    let app = TestApp::spawn().await;
    let writers = writers(&app);
    // Hold the next position with an uncommitted record, so both writers' shared statements
    // wait on it for the same positions; once it is rolled back, one statement takes them and
    // the primary key refuses the other, which rolls back that writer's events too.
    let holder = hold_next_position(&app).await;
    // Spawned without a pause between them: on the test's one thread, each writer wakes only
    // after its record and its event are both queued, so they share a statement.
    let waiting: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(w, (appender, log))| {
            let (appender, log) = (appender.clone(), log.clone());
            let record = record_at(format!("held-{w}"), chrono::Utc::now());
            let record = tokio::spawn(async move { log.record(record).await });
            let appended =
                tokio::spawn(
                    async move { appender.append(TYPE, &event(&format!("held-{w}"))).await },
                );
            (appended, record)
        })
        .collect();
    // Until both statements wait on the holder (briefly: an open transaction id holds back the
    // projections of every test's database).
    app.until_backends_wait_on_a_lock(2).await;
    holder.rollback().await.unwrap();
    for (appended, committed) in waiting {
        let (appended, committed) = (appended.await.unwrap(), committed.await.unwrap());
        assert!(appended.is_ok(), "{appended:?}");
        assert!(committed, "the refused writer's record is chained again");
    }
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), None, None)
        .await
        .unwrap();
    assert_eq!(broken, None);
    // One writer's statement went through whole; the other's events were written alone.
    assert_eq!(sharing_a_commit(&app, TYPE).await, 1);
}

#[tokio::test]
async fn a_shared_statement_whose_connection_ends_fails_its_records_and_commits_its_events() {
    let app = TestApp::spawn().await;
    // The records' insert ends its own connection (FATAL 57P01, as an administrator's
    // `pg_terminate_backend` or a restarting server would), counting each time it does.
    sqlx::raw_sql(
        "CREATE SEQUENCE doomed_attempts; \
         CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM nextval('doomed_attempts'); \
           PERFORM pg_terminate_backend(pg_backend_pid()); \
           RETURN NEW; END $$; \
         CREATE TRIGGER doom BEFORE INSERT ON request_log FOR EACH ROW \
           WHEN (NEW.request_id LIKE 'doomed-%') EXECUTE FUNCTION doom();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (appender, events) = Appender::detached();
    let log = AuditLog::start(app.pool.clone(), crate::support::chain_key(), Some(events));
    // Queued together, so they share a statement (as in the test above).
    let record = {
        let log = log.clone();
        tokio::spawn(async move {
            log.record(record_at("doomed-0".into(), chrono::Utc::now()))
                .await
        })
    };
    let appended = {
        let appender = appender.clone();
        tokio::spawn(async move { appender.append(TYPE, &event("survivor")).await })
    };
    let (appended, committed) = (appended.await.unwrap(), record.await.unwrap());
    assert!(
        appended.is_ok(),
        "the events were written alone: {appended:?}"
    );
    assert!(!committed, "the record is reported not written");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM doomed_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "the records were not tried again");
    // The writer goes on from the stored end of the chain.
    assert!(
        log.record(record_at("after-0".into(), chrono::Utc::now()))
            .await
    );
    assert!(appender.append(TYPE, &event("after")).await.is_ok());
    assert_whole_chain_holds(&app, "after-", 1).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1")
        .bind(TYPE)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 2);
}
