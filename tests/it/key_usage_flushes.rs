//! Key-usage flushes whose answer is lost (a relay in front of the database keeps it and cuts
//! the connection, `support::lossy`): a flush that committed is not written again, one that did
//! not is, so every use is counted exactly once.

use herald_api::auth::KeyVerifier;
use herald_domain::KeyId;
use sqlx::PgPool;

use crate::support::lossy::LossyRelay;
use crate::support::{TestApp, PEPPER};

async fn counted(app: &TestApp, key: &KeyId) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(usage_count), 0)::bigint FROM api_key_usage WHERE key_id = $1",
    )
    .bind(key.as_str())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// A verifier counting uses of one key, flushing through `relay` on one connection.
async fn through(relay: &LossyRelay) -> (KeyVerifier, PgPool) {
    let pool = relay.single_connection_pool().await;
    (
        KeyVerifier::new(pool.clone(), PEPPER.as_bytes().to_vec()),
        pool,
    )
}

fn used(verifier: &KeyVerifier, key: &KeyId, times: usize) {
    for _ in 0..times {
        verifier.count_use(key);
    }
}

#[tokio::test]
async fn a_flush_whose_commit_answer_is_lost_is_not_counted_twice() {
    let app = TestApp::spawn().await;
    let relay = LossyRelay::start(&app.database_url, None).await;
    let (verifier, pool) = through(&relay).await;
    let key = KeyId::parse("lostcommit000001").unwrap();
    used(&verifier, &key, 3);
    verifier.flush_usage(&pool).await.unwrap();
    used(&verifier, &key, 2);
    relay.lose_next_answer_holding("COMMIT");
    assert!(verifier.flush_usage(&pool).await.is_err());
    assert!(relay.answer_lost());
    assert_eq!(counted(&app, &key).await, 5, "the lost flush committed");
    used(&verifier, &key, 1);
    verifier.flush_usage(&pool).await.unwrap();
    assert_eq!(counted(&app, &key).await, 6);
    verifier.flush_usage(&pool).await.unwrap();
    assert_eq!(counted(&app, &key).await, 6);
}

#[tokio::test]
async fn a_flush_cut_before_its_commit_is_written_again() {
    let app = TestApp::spawn().await;
    let relay = LossyRelay::start(&app.database_url, None).await;
    let (verifier, pool) = through(&relay).await;
    let key = KeyId::parse("lostflush0000001").unwrap();
    used(&verifier, &key, 2);
    // The answer to the flush's first insert (its id): nothing of it commits.
    relay.lose_next_answer_holding("INSERT 0 1");
    assert!(verifier.flush_usage(&pool).await.is_err());
    assert!(relay.answer_lost());
    assert_eq!(counted(&app, &key).await, 0);
    // Its transaction is left open by the cut; PostgreSQL ends it once idle (10 s), or now.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = current_database() AND state = 'idle in transaction'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    used(&verifier, &key, 1);
    verifier.flush_usage(&pool).await.unwrap();
    assert_eq!(counted(&app, &key).await, 3);
}
