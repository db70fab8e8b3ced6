//! Credentials a client puts where the request log keeps text are redacted there: an API key
//! or a session token in the user agent or the path, and an `X-Request-Id` that holds one is
//! not adopted (the server makes the request's id instead); encoded ones are found too, and a
//! control character beside one stays escaped, so the record is still stored.

use reqwest::Method;

use crate::support::TestApp;

/// Every text the request log holds, as one string per record.
async fn everything_recorded(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT row_to_json(r)::text FROM request_log r")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn keys_and_session_tokens_sent_as_text_never_reach_the_record() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read"]).await;
    let id = key.split('_').nth(2).unwrap();
    let token = app.member_token(project, "viewer").await;

    let agent = app
        .request(Method::GET, "/api/v1/jobs", &key)
        .header("User-Agent", format!("tool/1.0 key={key} session={token}"))
        .header("X-Request-Id", "agent-with-secrets")
        .send()
        .await
        .unwrap();
    assert_eq!(agent.status(), 200);
    let recorded: String = sqlx::query_scalar(
        "SELECT user_agent FROM request_log WHERE request_id = 'agent-with-secrets'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        format!("tool/1.0 key=hrld_live_{id}_[redacted] session=[redacted]")
    );

    for secret in [&key, &token] {
        let named = app
            .request(Method::GET, "/api/v1/jobs", &key)
            .header("X-Request-Id", secret.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(named.status(), 200);
        let echoed = named.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(echoed, secret.as_str(), "a made id, not the secret");
    }
    let pasted = app
        .request(Method::GET, &format!("/api/v1/jobs/{token}"), &key)
        .header("X-Request-Id", "token-in-path")
        .send()
        .await
        .unwrap();
    assert!(pasted.status().is_client_error());
    let path: String =
        sqlx::query_scalar("SELECT path FROM request_log WHERE request_id = 'token-in-path'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(path, "/api/v1/jobs/[redacted]");

    // Encoded as routing would decode it: still found. A NUL or a line break beside a key is
    // kept escaped, so the record is stored (not a 503) and no log line is split.
    for (request_id, path, recorded) in [
        (
            "token-encoded",
            format!("/api/v1/jobs/{}", token.replace('.', "%2E")),
            "/api/v1/jobs/[redacted]".to_owned(),
        ),
        (
            "key-and-nul",
            format!("/api/v1/jobs/{key}%00"),
            format!("/api/v1/jobs/hrld_live_{id}_[redacted]%00"),
        ),
        (
            "key-and-newline",
            format!("/api/v1/jobs/{key}%0Afake%20line"),
            format!("/api/v1/jobs/hrld_live_{id}_[redacted]%0Afake line"),
        ),
    ] {
        let answer = app
            .request(Method::GET, &path, &key)
            .header("X-Request-Id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{path}");
        let path: String = sqlx::query_scalar("SELECT path FROM request_log WHERE request_id = $1")
            .bind(request_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(path, recorded);
    }

    // A key at the user agent's 512-character cut is redacted whole, before the cut.
    let long = app
        .request(Method::GET, "/api/v1/jobs", &key)
        .header("User-Agent", format!("{}{key}", "a".repeat(480)))
        .header("X-Request-Id", "agent-at-the-cut")
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let recorded: String = sqlx::query_scalar(
        "SELECT user_agent FROM request_log WHERE request_id = 'agent-at-the-cut'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(recorded.chars().count() <= 512, "{recorded}");
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !recorded.contains(&secret[..8]),
        "no part of the secret: {recorded}"
    );

    let signature = token.rsplit('.').next().unwrap();
    for record in everything_recorded(&app).await {
        assert!(!record.contains(secret), "{record}");
        assert!(!record.contains(signature), "{record}");
    }
}
