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
    assert_eq!(
        forged["reason"],
        "its contents do not match its hash (or it was chained under another pepper)"
    );
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

/// A pepper generated into the data directory is written whole (no staging file is left), and
/// an empty or cut one is refused rather than used: it would make the chain key guessable.
#[tokio::test]
async fn a_kept_pepper_is_written_whole_and_a_cut_one_is_refused() {
    let app = TestApp::spawn().await;
    let dir = std::env::temp_dir().join(format!("herald-pepper-{}", uuid::Uuid::new_v4()));
    let run = |args: &'static [&'static str]| {
        tokio::process::Command::new(crate::projections::herald_binary())
            .args(args)
            .env("DATABASE_URL", &app.database_url)
            .env("HERALD_DATA_DIR", &dir)
            .env_remove("HERALD_API_KEY_PEPPER")
            .env("HERALD_LOG", "warn")
            .output()
    };
    let created = run(&["keys", "create", "--name", "a", "--scopes", "admin"])
        .await
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["api-key-pepper"]);
    let kept = std::fs::read_to_string(dir.join("api-key-pepper")).unwrap();
    assert_eq!(kept.len(), 64);

    for cut in ["", "\n", "0123456789abcde"] {
        std::fs::write(dir.join("api-key-pepper"), cut).unwrap();
        for args in [
            &["keys", "create", "--name", "b", "--scopes", "admin"][..],
            &["audit", "verify"][..],
        ] {
            let refused = run(args).await.unwrap();
            assert!(!refused.status.success(), "{args:?} with {cut:?}");
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(said.contains("fewer than a pepper's 16"), "{said}");
        }
    }
    // A pepper that cannot be read is an error, not a reason to make up another.
    std::fs::remove_file(dir.join("api-key-pepper")).unwrap();
    std::fs::create_dir(dir.join("api-key-pepper")).unwrap();
    let unreadable = run(&["keys", "create", "--name", "c", "--scopes", "admin"])
        .await
        .unwrap();
    assert!(!unreadable.status.success());
    let said = String::from_utf8_lossy(&unreadable.stderr);
    assert!(
        said.contains("reading") && !said.contains("panicked"),
        "{said}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server started with another pepper than the one the log was chained under says so at
/// once, in its log: it would chain every record it writes under another key.
#[tokio::test]
async fn a_server_with_another_pepper_says_so_when_it_starts() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    app.get("/api/v1/jobs", &key).await;
    let port = crate::api_keys::free_port();
    let mut server = tokio::process::Command::new(crate::projections::herald_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", "another pepper, 0123456789")
        .env("HERALD_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut stderr = server.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while !said.contains("Herald is listening") {
            let n = stderr.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the server ended: {said}");
            said.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the server started");
    server.kill().await.unwrap();
    assert!(said.contains("under this server's pepper"), "{said}");
}
