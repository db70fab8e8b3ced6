//! The request log's chain is keyed (format 3, HMAC-SHA256 under a key derived from the
//! servers' pepper): someone who can write to the database but holds no pepper cannot hide an
//! edit by computing the later hashes again, neither under a key of their own nor in the
//! older, unkeyed format that anyone can compute. Only the holder of the pepper can.
//! `herald audit verify` needs the servers' pepper and says so without one.

use herald_api::audit::chain::{self, Record};
use herald_api::audit::ChainKey;
use serde_json::Value;

use crate::support::{chain_key, TestApp};

/// Edits record 3 (its status) and writes every hash from it on again, each record in
/// `format` and, when keyed, under `key`: what someone with write access to the table can do.
async fn edit_and_rehash(app: &TestApp, format: i16, key: &ChainKey) {
    let mut records: Vec<Record> = sqlx::query_as("SELECT * FROM request_log ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let mut prev = records[1].hash.clone();
    for record in &mut records[2..] {
        if record.seq == 3 {
            record.status = 500;
        }
        record.chain_format = format;
        record.hash = chain::hash(key, &prev, record);
        prev = record.hash.clone();
        sqlx::query(
            "UPDATE request_log SET status = $2, chain_format = $3, hash = $4 WHERE seq = $1",
        )
        .bind(record.seq)
        .bind(record.status)
        .bind(record.chain_format)
        .bind(&record.hash)
        .execute(&app.pool)
        .await
        .unwrap();
    }
}

async fn verified(app: &TestApp) -> Value {
    let response = app.get("/api/v1/audit/verify", &app.admin_key).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_edit_hashed_again_without_the_pepper_is_found() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..5 {
        app.get("/api/v1/jobs", &key).await;
    }
    let formats: Vec<i16> = sqlx::query_scalar("SELECT chain_format FROM request_log")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(formats.iter().all(|f| *f == 3), "{formats:?}");

    // In the unkeyed format, which the documentation describes to everyone.
    edit_and_rehash(&app, 2, &chain_key()).await;
    let downgraded = verified(&app).await;
    assert_eq!(downgraded["first_broken_seq"], 3, "{downgraded}");
    let reason = downgraded["reason"].as_str().unwrap();
    assert!(reason.contains("not keyed"), "{reason}");

    // Keyed, under a pepper of one's own.
    let guessed = ChainKey::from_pepper(b"not the servers' pepper at all");
    edit_and_rehash(&app, 3, &guessed).await;
    let forged = verified(&app).await;
    assert_eq!(forged["first_broken_seq"], 3, "{forged}");
    assert_eq!(forged["reason"], "its contents do not match its hash");
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(!cli.status.success());
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(said.contains("broken at record 3"), "{said}");

    // The holder of the pepper can: the chain verifies again (which is why it stays secret).
    edit_and_rehash(&app, 3, &chain_key()).await;
    let rekeyed = verified(&app).await;
    assert_eq!(rekeyed["ok"], true, "{rekeyed}");
}

#[tokio::test]
async fn verifying_needs_the_servers_pepper() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    app.get("/api/v1/jobs", &key).await;
    let empty = std::env::temp_dir().join(format!("herald-no-pepper-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&empty).unwrap();
    let without = tokio::process::Command::new(crate::projections::herald_binary())
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_DATA_DIR", &empty)
        .env_remove("HERALD_API_KEY_PEPPER")
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(!without.status.success());
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(
        said.contains("verifying needs the servers' pepper"),
        "{said}"
    );
    // Nothing was generated in its place.
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    std::fs::remove_dir(&empty).unwrap();

    let other = tokio::process::Command::new(crate::projections::herald_binary())
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", "another pepper, 0123456789")
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(!other.status.success());
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(said.contains("broken at record 1"), "{said}");
    let right = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(right.status.success());
}
