//! The answers kept for an `Idempotency-Key` are sealed at rest: a new key's plaintext is not
//! in `idempotency_keys`, yet the replay answers it whole; a body kept before sealing existed is
//! replayed as stored; a sealed body that was altered, or moved from another row, is not
//! replayed (500 `IDEMPOTENT_ANSWER_UNREADABLE`), and the refusal is recorded as such.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

async fn create_key(app: &TestApp, caller: &str, idempotency_key: &str) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/api-keys", caller)
        .header("Idempotency-Key", idempotency_key)
        .json(&json!({"name": "ci", "scopes": ["jobs:read"]}))
        .send()
        .await
        .unwrap()
}

async fn kept(app: &TestApp, idempotency_key: &str) -> (Vec<u8>, bool) {
    sqlx::query_as("SELECT body, body_sealed FROM idempotency_keys WHERE key = $1")
        .bind(idempotency_key)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Alters the kept body of `idempotency_key` by one bit (twice: as it was).
async fn flip_last_byte(app: &TestApp, idempotency_key: &str) {
    let (mut body, _) = kept(app, idempotency_key).await;
    *body.last_mut().unwrap() ^= 1;
    sqlx::query("UPDATE idempotency_keys SET body = $1 WHERE key = $2")
        .bind(body)
        .bind(idempotency_key)
        .execute(&app.pool)
        .await
        .unwrap();
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_new_keys_plaintext_is_not_kept_readable_yet_the_replay_answers_it() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let first = create_key(&app, &manager, "new-ci-key").await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let created: Value = first.json().await.unwrap();
    let plaintext = created["key"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("hrld_"), "{created}");

    let (body, sealed) = kept(&app, "new-ci-key").await;
    assert!(sealed);
    assert!(!holds(&body, plaintext.as_bytes()), "the plaintext is kept");
    let secret_part = &plaintext[plaintext.len() - 20..];
    assert!(!holds(&body, secret_part.as_bytes()));
    assert!(!holds(&body, b"\"scopes\""), "the answer is kept readable");

    let replay = create_key(&app, &manager, "new-ci-key").await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), created);
}

#[tokio::test]
async fn only_a_body_kept_before_sealing_or_sealed_for_its_own_row_is_replayed() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    for idempotency_key in ["first", "second"] {
        let response = create_key(&app, &manager, idempotency_key).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let set = |body: Vec<u8>, sealed: bool| {
        let pool = app.pool.clone();
        async move {
            sqlx::query(
                "UPDATE idempotency_keys SET body = $1, body_sealed = $2 WHERE key = 'first'",
            )
            .bind(body)
            .bind(sealed)
            .execute(&pool)
            .await
            .unwrap();
        }
    };

    // Kept before sealing existed: replayed as stored.
    set(br#"{"kept":"before sealing"}"#.to_vec(), false).await;
    let legacy = create_key(&app, &manager, "first").await;
    assert_eq!(legacy.status(), StatusCode::CREATED);
    assert_eq!(
        legacy.json::<Value>().await.unwrap(),
        json!({"kept": "before sealing"})
    );

    // Another row's sealed body, moved here: bound to that row, so it does not open.
    let (theirs, _) = kept(&app, "second").await;
    set(theirs.clone(), true).await;
    let moved = create_key(&app, &manager, "first").await;
    assert_eq!(moved.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(problem(moved).await["code"], "IDEMPOTENT_ANSWER_UNREADABLE");
    let recorded: (String, Option<String>) = sqlx::query_as(
        "SELECT outcome, error_code FROM request_log WHERE status = 500 ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        (
            "server_error".into(),
            Some("IDEMPOTENT_ANSWER_UNREADABLE".into())
        )
    );

    // Its own sealed body with one byte altered: does not open either.
    flip_last_byte(&app, "second").await;
    let altered = create_key(&app, &manager, "second").await;
    assert_eq!(altered.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Its byte put back, it opens: the refusal above was the seal's, not the row's.
    flip_last_byte(&app, "second").await;
    let restored = create_key(&app, &manager, "second").await;
    assert_eq!(restored.status(), StatusCode::CREATED);
    assert_eq!(restored.headers()["idempotent-replayed"], "true");
}
