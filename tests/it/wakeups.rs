//! Wake-ups: a process's listener wakes its runners for another process's announcement (and
//! for the CLI's, which carries no origin) but skips the echo of its own; and a write that
//! commits while an older transaction is still open still reaches the read model promptly
//! (the coalescer's second in-process wake-up), not at the next poll.

use std::sync::Arc;
use std::time::Duration;

use herald_projections::runtime::LogWakeups;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};

use crate::support::db::fresh_database;
use crate::support::TestApp;

async fn announce(pool: &PgPool, payload: &str) {
    sqlx::query("SELECT pg_notify('herald_events', $1)")
        .bind(payload)
        .execute(pool)
        .await
        .unwrap();
}

async fn woken_within(target: &Notify, wait: Duration) -> bool {
    tokio::time::timeout(wait, target.notified()).await.is_ok()
}

/// Until the listener's `LISTEN` has run on its connection (an announcement before it is lost).
async fn until_listening(pool: &PgPool) {
    for _ in 0..500 {
        let listening: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
              WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND state = 'idle')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if listening {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the listener never ran LISTEN");
}

#[tokio::test]
async fn a_listener_wakes_for_other_origins_and_skips_its_own_echo() {
    // A database of its own, with no server appending (and announcing) alongside.
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let target = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let wakeups = LogWakeups::new(vec![target.clone()], "origin:this".into());
    let listening = tokio::spawn(wakeups.run(pool.clone(), cancel.clone()));
    until_listening(&pool).await;
    announce(&pool, "origin:another").await;
    assert!(
        woken_within(&target, Duration::from_secs(10)).await,
        "another replica's announcement wakes the runners"
    );

    // The echo, then an announcement without origin, delivered in that order: waiting from
    // before both, exactly one wake-up comes (had the echo woken the runners, the second
    // announcement's wake-up would be stored and found after it).
    let first = target.notified();
    tokio::pin!(first);
    first.as_mut().enable();
    announce(&pool, "origin:this").await;
    announce(&pool, "").await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), first)
            .await
            .is_ok(),
        "an announcement without origin wakes"
    );
    assert!(
        !woken_within(&target, Duration::from_secs(1)).await,
        "the process's own echo is skipped"
    );

    cancel.cancel();
    listening.await.unwrap();
}

#[tokio::test]
async fn an_event_held_back_by_an_older_open_transaction_reaches_the_list_once_it_ends() {
    // Polling alone would take 30 s: anything sooner is the runner looking again by itself.
    let app = TestApp::spawn_with(|c| c.projections.poll_interval_ms = 30_000).await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    app.wait_for_projections().await;
    // An older transaction with an id: no reader may pass events committed after it began.
    let mut older = PgConnection::connect(&app.database_url).await.unwrap();
    let mut open = older.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    let id = app.submit_job(&key, json!({"kind": "held"})).await;
    // Every wake-up the append caused has come and gone while the event was held back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.commit().await.unwrap();
    let listed = async {
        loop {
            let page: Value = app.get("/api/v1/jobs", &key).await.json().await.unwrap();
            if page["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|j| j["id"] == id.to_string())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), listed)
        .await
        .expect("the job is listed soon after the older transaction ends");
}
