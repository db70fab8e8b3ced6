//! A witness (`SEQ:HASH` of a record an earlier check found intact, kept outside the database)
//! shows what the chain alone cannot: records deleted from the log's end together with the
//! usage checkpoint, and a log whose every record was hashed again in the unkeyed format.
//! Through the route and `herald audit verify --witness`.

use herald_api::audit::chain::{self, Record};
use herald_api::audit::ChainKey;
use serde_json::Value;

use crate::projections::herald;
use crate::support::{chain_key, TestApp};

async fn verified(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .get(&format!("/api/v1/audit/verify{query}"), &app.admin_key)
        .await;
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The command's exit status and what it printed.
async fn cli(app: &TestApp, witness: &str) -> (bool, String) {
    let out = herald(
        &app.database_url,
        &["audit", "verify", "--witness", witness],
    )
    .await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        said + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every record hashed again from the chain's start, each in `format`, under `key`.
async fn rehash_all(app: &TestApp, format: i16, key: &ChainKey) {
    let records: Vec<Record> = sqlx::query_as("SELECT * FROM request_log ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let mut prev = "0".repeat(64);
    for mut record in records {
        record.chain_format = format;
        record.hash = chain::hash(key, &prev, &record);
        prev = record.hash.clone();
        sqlx::query("UPDATE request_log SET chain_format = $2, hash = $3 WHERE seq = $1")
            .bind(record.seq)
            .bind(format)
            .bind(&record.hash)
            .execute(&app.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_witness_finds_a_cut_end_and_a_rewritten_log() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..4 {
        app.get("/api/v1/jobs", &key).await;
    }
    let (status, first) = verified(&app, "").await;
    assert_eq!((status, &first["ok"]), (200, &Value::Bool(true)), "{first}");
    let witness = first["last"].as_str().unwrap().to_owned();
    let (seq, hash) = witness.split_once(':').unwrap();
    let seq: i64 = seq.parse().unwrap();
    let stored: String = sqlx::query_scalar("SELECT hash FROM request_log WHERE seq = $1")
        .bind(seq)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, hash);
    let (status, again) = verified(&app, &format!("?witness={witness}")).await;
    assert_eq!((status, &again["ok"]), (200, &Value::Bool(true)), "{again}");
    assert!(cli(&app, &witness).await.0);

    // Every record hashed again, unkeyed, from the start: the chain alone looks intact.
    rehash_all(&app, 2, &chain_key()).await;
    let (_, plain) = verified(&app, "").await;
    assert_eq!(plain["ok"], true, "{plain}");
    let (_, witnessed) = verified(&app, &format!("?witness={witness}")).await;
    assert_eq!(witnessed["first_broken_seq"], seq, "{witnessed}");
    assert_eq!(witnessed["reason"], "its hash is not the one witnessed");
    rehash_all(&app, 3, &chain_key()).await;

    // The end cut off at the witnessed record, the usage checkpoint moved back with it. The
    // server is stopped first, so that no record of its own follows the cut.
    let (pool, database_url) = (app.pool.clone(), app.database_url.clone());
    app.stop().await;
    let mut cut = pool.begin().await.unwrap();
    for statement in [
        "DELETE FROM request_log WHERE seq >= $1",
        "UPDATE usage_checkpoint SET seq = $1 - 1",
    ] {
        sqlx::query(statement)
            .bind(seq)
            .execute(&mut *cut)
            .await
            .unwrap();
    }
    cut.commit().await.unwrap();
    let plain = herald(&database_url, &["audit", "verify"]).await;
    assert!(plain.status.success(), "the chain alone cannot see the cut");
    let out = herald(&database_url, &["audit", "verify", "--witness", &witness]).await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains(&format!("broken at record {seq}")), "{said}");
    assert!(said.contains("the witnessed record is missing"), "{said}");
}

#[tokio::test]
async fn a_pruned_witness_holds_and_a_malformed_one_is_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..3 {
        app.get("/api/v1/jobs", &key).await;
    }
    let (_, first) = verified(&app, "").await;
    let witness = first["last"].as_str().unwrap().to_owned();
    let (seq, hash) = witness.split_once(':').unwrap();
    let seq: i64 = seq.parse().unwrap();
    // Pruned by retention: the records up to the witness go, the sealed anchor keeps it.
    let occurred: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT occurred_at FROM request_log WHERE seq = $1")
            .bind(seq)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let cutoff = occurred + chrono::Duration::microseconds(1);
    let pruned = herald_api::audit::prune(&app.pool, &chain_key(), cutoff).await;
    assert_eq!(pruned.unwrap(), seq as u64);
    let anchor: (i64, String) = sqlx::query_as("SELECT seq, hash FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(anchor, (seq, hash.to_owned()));
    let (_, pruned) = verified(&app, &format!("?witness={witness}")).await;
    assert_eq!(pruned["ok"], true, "{pruned}");
    let other = format!("{seq}:{}", "0".repeat(64));
    let (_, forged) = verified(&app, &format!("?witness={other}")).await;
    assert_eq!(forged["first_broken_seq"], seq, "{forged}");

    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    for bad in [
        "12",
        "0:ab",
        &format!("x:{hash}"),
        &format!("0:{hash}"),
        &format!("1:{}", hash.to_uppercase()),
    ] {
        let (status, problem) = verified(&app, &format!("?witness={bad}")).await;
        assert_eq!(status, 400, "{bad}: {problem}");
        assert_eq!(problem["code"], "VALIDATION_FAILED");
        assert_eq!(problem["errors"][0]["field"], "witness", "{problem}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
    let (ok, said) = cli(&app, "12").await;
    assert!(!ok);
    assert!(said.contains("must be SEQ:HASH"), "{said}");
}
