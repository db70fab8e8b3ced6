//! A log stream whose client reads slowly: events the server has already read from the log but
//! not yet sent are not sent once the key is revoked. The client is a raw socket with a small,
//! fixed receive buffer, so the server's stream stalls on backpressure with most of a page of
//! large events queued in memory; the credentials are rechecked when sending resumes, and the
//! stream ends instead of draining the queue.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::TestApp;

/// Jobs in the page the stream reads at once (a page holds 200 events).
const JOBS: usize = 120;
/// Each job's input: the whole page is ~18 MB, far more than the socket buffers and hyper's
/// write buffer can hold between the server and a client that is not reading.
const INPUT_BYTES: usize = 150_000;

#[tokio::test]
async fn queued_events_are_not_sent_after_the_key_is_revoked() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    app.submit_job(&key, json!({"kind": "marker"})).await;
    let newest = app
        .get("/api/v1/events?type=job.queued&limit=1", &key)
        .await;
    assert_eq!(newest.status(), StatusCode::OK);
    let newest: serde_json::Value = newest.json().await.unwrap();
    let marker = newest["data"][0]["global_position"].as_i64().unwrap();
    let padding = "x".repeat(INPUT_BYTES);
    for _ in 0..JOBS {
        app.submit_job(&key, json!({"kind": "render", "input": {"pad": padding}}))
            .await;
    }

    let mut client = slow_client(&app).await;
    let request = format!(
        "GET /api/v1/events/stream?types=job.queued HTTP/1.1\r\nHost: herald\r\n\
         X-API-Key: {key}\r\nLast-Event-ID: {marker}\r\nAccept: text/event-stream\r\n\
         Connection: close\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.windows(6).any(|w| w == b"data: ") {
        let mut byte = [0u8; 1024];
        let n = client.read(&mut byte).await.unwrap();
        assert!(n > 0, "the stream ended before its first event");
        head.extend_from_slice(&byte[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    // The server has filled every buffer on the way and waits on the client, with the rest
    // of the page queued. Revoke the key, let the recheck come due, then read on.
    let id = key.split('_').nth(2).unwrap();
    let revoked = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/api-keys/{id}/revoke"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut rest))
        .await
        .expect("the stream ended")
        .unwrap();
    head.extend_from_slice(&rest);
    let sent = head.windows(6).filter(|w| w == b"data: ").count();
    assert!(
        sent < JOBS / 2,
        "{sent} of {JOBS} queued events were sent after the key was revoked"
    );
}

/// A connection to the app whose receive buffer is small and fixed (no autotuning), so the
/// server meets backpressure as soon as the client stops reading.
async fn slow_client(app: &TestApp) -> TcpStream {
    let address = app
        .base_url
        .trim_start_matches("http://")
        .parse()
        .expect("the app listens on an address");
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(address).await.unwrap()
}
