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
    move_anchor_on(&app.pool, seq, seal).await;
}

async fn move_anchor_on(pool: &sqlx::PgPool, seq: i64, seal: Option<String>) {
    let mut moved = pool.begin().await.unwrap();
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

/// Retention removes only records found intact: records deleted by hand from the log's start,
/// and one backdated to look old enough, are not sealed over; the break stays where
/// verification reports it, and nothing is removed.
#[tokio::test]
async fn retention_never_seals_over_a_broken_start() {
    let app = pruned_log(2).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Records 3 to 5 deleted, record 6 backdated by a year.
    for statement in [
        "DELETE FROM request_log WHERE seq BETWEEN 3 AND 5",
        "UPDATE request_log SET occurred_at = occurred_at - interval '1 year' WHERE seq = 6",
    ] {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    let refused = audit::prune(&app.pool, &chain_key(), cutoff).await;
    match refused {
        Err(audit::PruneError::Broken { seq, reason }) => {
            assert_eq!(seq, 3, "{reason}");
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("pruned over a broken start: {other:?}"),
    }
    let (anchor, left): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT seq FROM request_log_anchor), (SELECT count(*) FROM request_log)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((anchor, left), (2, total - 3));
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(String::from_utf8_lossy(&cli.stdout).contains("broken at record 3"));

    // Put back in place of the deleted ones but edited: still refused, at the edit.
    let app = pruned_log(2).await;
    sqlx::query("UPDATE request_log SET status = 500, occurred_at = occurred_at - interval '1 year' WHERE seq <= 4")
        .execute(&app.pool)
        .await
        .unwrap();
    let refused = audit::prune(&app.pool, &chain_key(), cutoff).await;
    assert!(
        matches!(refused, Err(audit::PruneError::Broken { seq: 3, .. })),
        "{refused:?}"
    );
}

/// An emptied log behind an unsealed anchor is a broken link too, and an anchor whose `keyed`
/// was emptied is a broken seal, not an error.
#[tokio::test]
async fn an_emptied_log_and_an_edited_anchor_are_broken_links() {
    let app = pruned_log(2).await;
    let keyed_emptied = "UPDATE request_log_anchor SET keyed = NULL";
    sqlx::query(keyed_emptied).execute(&app.pool).await.unwrap();
    let (status, edited) = {
        let response = app.get("/api/v1/audit/verify", &app.admin_key).await;
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["first_broken_seq"], 2, "{edited}");

    let end: i64 = sqlx::query_scalar("SELECT max(seq) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let (pool, url) = (app.pool.clone(), app.database_url.clone());
    app.stop().await;
    move_anchor_on(&pool, end, None).await;
    let cli = crate::projections::herald(&url, &["audit", "verify"]).await;
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(!cli.status.success(), "{said}");
    assert!(
        said.contains(&format!("broken at record {}", end + 1)),
        "{said}"
    );
}

/// A server with another pepper says so even when retention has emptied the log: the sealed
/// anchor is checked instead of a record.
#[tokio::test]
async fn another_pepper_is_seen_from_the_anchor_of_an_emptied_log() {
    let app = pruned_log(2).await;
    let everything = chrono::Utc::now() + chrono::Duration::days(1);
    audit::prune(&app.pool, &chain_key(), everything)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM request_log WHERE chain_format = 3")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let anchor: i64 = sqlx::query_scalar("SELECT seq FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every record pruned");
    let other = ChainKey::from_pepper(b"not the servers' pepper at all");
    let seen = audit::newest_under_other_key(&app.pool, &other).await;
    assert_eq!(seen.unwrap(), Some(anchor));
    let own = audit::newest_under_other_key(&app.pool, &chain_key()).await;
    assert_eq!(own.unwrap(), None);
}
