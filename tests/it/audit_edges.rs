//! Calls at the edges of what the request log sees: one whose client gives up (a timed-out
//! client, a closed socket) is still handled to the end and recorded (the log has every call
//! that changed something, even when nobody was left to receive the answer), and shutdown waits
//! for it; a body sent without a declared length is recorded with its real size; a path of
//! any length is recorded cut to a bound; a user agent outside ASCII is recorded as sent; an
//! API key pasted into a path is recorded without its secret.

use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::Method;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn a_submission_whose_client_gave_up_is_still_recorded() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let request_id = "client-gave-up-0001";
    // Appends wait for the lock, so the call is still being handled when the client leaves.
    let blocker = app.block_writes_to("events").await;
    let abandoned = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("X-Request-Id", request_id)
        .timeout(Duration::from_millis(500))
        .json(&json!({"kind": "abandoned"}))
        .send()
        .await;
    assert!(abandoned.unwrap_err().is_timeout());
    blocker.commit().await.unwrap();
    assert_handled_and_recorded(&app, request_id).await;
}

#[tokio::test]
async fn a_chunked_body_is_recorded_with_the_size_that_arrived() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let body = json!({"kind": "chunked", "input": {"note": "x".repeat(300)}}).to_string();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(100)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "chunked-body-0001")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let recorded = request_bytes(&app, "chunked-body-0001").await;
    assert_eq!(recorded, body.len() as i64);

    // A multipart form carrying a file, whose body streams to storage, is counted as it flows.
    let form = [
        "--b\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nchunked\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n",
        "Content-Type: application/octet-stream\r\n\r\n",
        &"y".repeat(50_000),
        "\r\n--b--\r\n",
    ]
    .concat();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = form
        .as_bytes()
        .chunks(4096)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("Content-Type", "multipart/form-data; boundary=b")
        .header("X-Request-Id", "chunked-form-0001")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let recorded = request_bytes(&app, "chunked-form-0001").await;
    assert_eq!(recorded, form.len() as i64);
}

/// The `request_bytes` the call `request_id` was recorded with.
async fn request_bytes(app: &TestApp, request_id: &str) -> i64 {
    sqlx::query_scalar("SELECT request_bytes FROM request_log WHERE request_id = $1")
        .bind(request_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chunked_body_refused_as_too_large_is_recorded_as_more_than_the_limit() {
    let app = TestApp::spawn_with(|c| c.http.max_body_bytes = 1024).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 512])).collect();
    let response = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("Content-Type", "application/json")
        .header("X-Request-Id", "chunked-too-large-0001")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let recorded = request_bytes(&app, "chunked-too-large-0001").await;
    assert_eq!(recorded, 1025, "at least one byte over the limit arrived");
}

#[tokio::test]
async fn a_submission_whose_connection_closed_is_still_handled_and_recorded() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let request_id = "connection-closed-0001";
    let blocker = app.block_writes_to("events").await;
    // reqwest, above, may keep a timed-out connection open: this socket is certainly closed.
    submit_and_close(&app, &key, request_id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.commit().await.unwrap();
    assert_handled_and_recorded(&app, request_id).await;
}

#[tokio::test]
async fn shutdown_waits_for_a_call_whose_client_left() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let (pool, request_id) = (app.pool.clone(), "left-before-shutdown-0001");
    let blocker = app.block_writes_to("events").await;
    submit_and_close(&app, &key, request_id).await;
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !stopping.is_finished(),
        "the server stopped while a call was still being handled"
    );
    blocker.commit().await.unwrap();
    stopping.await.unwrap();
    let recorded: Option<i32> =
        sqlx::query_scalar("SELECT status FROM request_log WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, Some(202), "recorded before the server stopped");
}

#[tokio::test]
async fn a_path_of_any_length_is_recorded_cut_to_a_bound() {
    let app = TestApp::spawn().await;
    let long = format!("/api/v1/{}", "a".repeat(20_000));
    let response = app
        .request(Method::GET, &long, &app.admin_key)
        .header("X-Request-Id", "long-path-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let path: String = sqlx::query_scalar("SELECT path FROM request_log WHERE request_id = $1")
        .bind("long-path-0001")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(path, format!("{}…", &long[..1024]));
}

#[tokio::test]
async fn a_user_agent_outside_ascii_is_recorded_as_sent() {
    let app = TestApp::spawn().await;
    let sent: [(&str, &[u8]); 2] = [
        ("agent-utf8-0001", "café-client/1.0 ☕".as_bytes()),
        ("agent-latin1-0001", b"caf\xe9-client/1.0"),
    ];
    for (request_id, agent) in sent {
        let response = app
            .request(Method::GET, "/api/v1/jobs", &app.admin_key)
            .header("X-Request-Id", request_id)
            .header("User-Agent", HeaderValue::from_bytes(agent).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let agent = |request_id: &'static str| {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT user_agent FROM request_log WHERE request_id = $1",
        )
        .bind(request_id)
        .fetch_one(&app.pool)
    };
    let utf8 = agent("agent-utf8-0001").await.unwrap();
    assert_eq!(utf8.as_deref(), Some("café-client/1.0 ☕"));
    // A byte that is not UTF-8 (Latin-1 é) is replaced, the rest kept.
    let latin1 = agent("agent-latin1-0001").await.unwrap();
    assert_eq!(latin1.as_deref(), Some("caf\u{fffd}-client/1.0"));
}

/// Submits a job over a raw connection and closes it once the call has reached its handler
/// (which waits on a lock the test holds), so the server sees its client leave mid-call.
async fn submit_and_close(app: &TestApp, key: &str, request_id: &str) {
    use tokio::io::AsyncWriteExt;
    let body = json!({"kind": "abandoned"}).to_string();
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n\
         X-Request-Id: {request_id}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    app.until_backends_wait_on_a_lock(1).await;
}

/// The call `request_id` submitted its job and was recorded with its 202, though nobody
/// received the answer.
async fn assert_handled_and_recorded(app: &TestApp, request_id: &str) {
    let mut recorded = None;
    for _ in 0..100 {
        recorded =
            sqlx::query_scalar::<_, i32>("SELECT status FROM request_log WHERE request_id = $1")
                .bind(request_id)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, Some(202), "the call was handled and recorded");
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'job.queued' \
           AND metadata->>'request_id' = $1",
    )
    .bind(request_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn an_api_key_pasted_into_a_path_is_recorded_without_its_secret() {
    let app = TestApp::spawn().await;
    let key = &app.admin_key;
    let id = key.split('_').nth(2).unwrap();
    let pasted = app
        .request(Method::GET, &format!("/api/v1/api-keys/{key}"), key)
        .header("X-Request-Id", "pasted-key-0001")
        .send()
        .await
        .unwrap();
    assert!(pasted.status().is_client_error());
    let (path, route): (String, String) =
        sqlx::query_as("SELECT path, route FROM request_log WHERE request_id = 'pasted-key-0001'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (path.as_str(), route.as_str()),
        (
            format!("/api/v1/api-keys/hrld_live_{id}_[redacted]").as_str(),
            "/api/v1/api-keys/{id}"
        )
    );
    // Percent-encoded, which routing decodes to the same key.
    let encoded = key.replace('_', "%5F");
    let pasted = app
        .request(Method::GET, &format!("/api/v1/api-keys/{encoded}"), key)
        .header("X-Request-Id", "pasted-key-0002")
        .send()
        .await
        .unwrap();
    assert!(pasted.status().is_client_error());
    let path: String =
        sqlx::query_scalar("SELECT path FROM request_log WHERE request_id = 'pasted-key-0002'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(path, format!("/api/v1/api-keys/hrld_live_{id}_[redacted]"));
    let secret = key.rsplit('_').next().unwrap();
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM request_log WHERE path LIKE $1")
        .bind(format!("%{secret}%"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(leaked, 0);
}
