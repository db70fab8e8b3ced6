//! Wake-ups across replicas: a process's listener wakes its runners for another process's
//! announcement (and for the trigger's and the CLI's, which carry no origin), but skips the
//! echo of its own, whose runners it already woke in-process.

use std::sync::Arc;
use std::time::Duration;

use herald_projections::runtime::LogWakeups;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use sqlx::PgPool;

use crate::support::db::fresh_database;

async fn announce(pool: &PgPool, payload: &str) {
    sqlx::query("SELECT pg_notify('herald_events', $1)")
        .bind(payload)
        .execute(pool)
        .await
        .unwrap();
}

async fn woken(target: &Notify) -> bool {
    tokio::time::timeout(Duration::from_millis(500), target.notified())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_listener_wakes_for_other_origins_and_skips_its_own_echo() {
    // A database of its own, with no server appending (and announcing) alongside.
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let target = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let wakeups = LogWakeups::new(vec![target.clone()], "origin:this".into());
    let listening = tokio::spawn(wakeups.run(pool.clone(), cancel.clone()));
    // LISTEN takes a moment; announce until the first foreign one gets through.
    let mut ready = false;
    for _ in 0..20 {
        announce(&pool, "origin:another").await;
        if woken(&target).await {
            ready = true;
            break;
        }
    }
    assert!(ready, "another replica's announcement wakes the runners");

    announce(&pool, "origin:this").await;
    assert!(!woken(&target).await, "the process's own echo is skipped");

    announce(&pool, "").await;
    assert!(woken(&target).await, "an announcement without origin wakes");

    cancel.cancel();
    listening.await.unwrap();
}
