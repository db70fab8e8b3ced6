//! The anchor retention leaves is sealed under the chain key (migration 0025): deleting the
//! log's first records and moving the anchor past them, which would read as retention, is a
//! broken link unless the seal was made with the servers' pepper. An anchor from before seals
//! verifies while only unkeyed records follow it.

use herald_api::audit::{self, ChainKey};
use serde_json::Value;

use crate::support::{chain_key, TestApp};

async fn verified(app: &TestApp) -> Value {
    let response = app.get("/api/v1/audit/verify", &app.admin_key).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A log of some records, its first `pruned` pruned by retention.
async fn pruned_log(pruned: i64) -> TestApp {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..6 {
        app.get("/api/v1/jobs", &key).await;
    }
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT occurred_at FROM request_log WHERE seq = $1")
            .bind(pruned)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let cutoff = after + chrono::Duration::microseconds(1);
    let removed = audit::prune(&app.pool, &chain_key(), cutoff).await.unwrap();
    assert_eq!(removed, pruned as u64);
    app
}

/// Moves the anchor to record `seq` (deleting the records up to it), with `seal`.
async fn move_anchor(app: &TestApp, seq: i64, seal: Option<String>) {
    let mut moved = app.pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE request_log_anchor a SET seq = r.seq, hash = r.hash, keyed = true, seal = $2 \
           FROM request_log r WHERE r.seq = $1",
    )
    .bind(seq)
    .bind(seal)
    .execute(&mut *moved)
    .await
    .unwrap();
    sqlx::query("DELETE FROM request_log WHERE seq <= $1")
        .bind(seq)
        .execute(&mut *moved)
        .await
        .unwrap();
    moved.commit().await.unwrap();
}

#[tokio::test]
async fn an_anchor_moved_without_the_pepper_is_a_broken_link() {
    let app = pruned_log(2).await;
    let intact = verified(&app).await;
    assert_eq!(intact["ok"], true, "{intact}");
    let (seal, keyed): (Option<String>, Option<bool>) =
        sqlx::query_as("SELECT seal, keyed FROM request_log_anchor")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(keyed, Some(true));
    assert_eq!(seal.as_ref().map(String::len), Some(64));

    // Moved to record 4, keeping the old seal: not this anchor's.
    move_anchor(&app, 4, seal).await;
    let moved = verified(&app).await;
    assert_eq!(moved["first_broken_seq"], 4, "{moved}");
    assert!(
        moved["reason"].as_str().unwrap().contains("not sealed"),
        "{moved}"
    );
    // Sealed under another pepper: the same.
    let other = ChainKey::from_pepper(b"not the servers' pepper at all");
    let hash: String = sqlx::query_scalar("SELECT hash FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    move_anchor(&app, 5, Some(other.seal_anchor(5, &hash, true))).await;
    let forged = verified(&app).await;
    assert_eq!(forged["first_broken_seq"], 5, "{forged}");
    // Without a seal, as anchors before migration 0025 are, with a keyed record after it.
    move_anchor(&app, 6, None).await;
    let unsealed = verified(&app).await;
    assert_eq!(unsealed["first_broken_seq"], 7, "{unsealed}");
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(!cli.status.success());
}

#[tokio::test]
async fn an_anchor_from_before_seals_verifies_while_unkeyed_records_follow_it() {
    let app = pruned_log(2).await;
    // The anchor as an older server left it, and the records after it hashed again as that
    // server hashed them (format 2): what an upgraded log looks like.
    sqlx::query("UPDATE request_log_anchor SET keyed = NULL, seal = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let anchor: String = sqlx::query_scalar("SELECT hash FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let records: Vec<audit::Record> = sqlx::query_as("SELECT * FROM request_log ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let mut prev = anchor;
    for mut record in records {
        record.chain_format = 2;
        record.hash = audit::chain::hash(&chain_key(), &prev, &record);
        prev = record.hash.clone();
        sqlx::query("UPDATE request_log SET chain_format = 2, hash = $2 WHERE seq = $1")
            .bind(record.seq)
            .bind(&record.hash)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    // Verified by the command (the route's own call would append a keyed record first).
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{said}");
    // The server goes on with keyed records after them: still intact.
    let after = verified(&app).await;
    assert_eq!(after["ok"], true, "{after}");
}
