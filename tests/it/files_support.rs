//! Helpers for the file tests: deterministic bytes, their SHA-256, and a resumable upload
//! driven chunk by chunk over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::support::TestApp;

/// `len` bytes that differ from position to position (so a misplaced chunk shows).
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            // xorshift64: no short period, unlike anything derived from the position alone.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Opens an upload of `data` in chunks of `chunk` bytes; returns its body.
pub async fn open_upload(app: &TestApp, key: &str, name: &str, data: &[u8], chunk: usize) -> Value {
    let body = json!({
        "filename": name,
        "size": data.len(),
        "chunk_size": chunk,
        "content_type": "audio/wav",
        "sha256": sha256(data),
    });
    let response = app.post("/api/v1/uploads", key, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Sends chunk `n` (with the checksum `declared`, or its own) and returns the response.
pub async fn put_chunk(
    app: &TestApp,
    key: &str,
    upload: &str,
    n: usize,
    data: &[u8],
    declared: Option<&str>,
) -> reqwest::Response {
    let checksum = declared.map_or_else(|| sha256(data), str::to_owned);
    app.request(
        Method::PUT,
        &format!("/api/v1/uploads/{upload}/chunks/{n}"),
        key,
    )
    .header("X-Chunk-Sha256", checksum)
    .body(data.to_vec())
    .send()
    .await
    .unwrap()
}

/// Uploads `data` whole through the resumable API and returns the upload id.
pub async fn upload(app: &TestApp, key: &str, name: &str, data: &[u8], chunk: usize) -> Uuid {
    let opened = open_upload(app, key, name, data, chunk).await;
    let id = opened["id"].as_str().unwrap().to_owned();
    for (n, part) in data.chunks(chunk).enumerate() {
        let response = put_chunk(app, key, &id, n, part, None).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap()
        );
    }
    let done = app
        .post(&format!("/api/v1/uploads/{id}/complete"), key, json!({}))
        .await;
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
    id.parse().unwrap()
}

/// GETs `path` and returns status, headers and body bytes.
pub async fn fetch(
    app: &TestApp,
    key: &str,
    path: &str,
    range: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = app.request(Method::GET, path, key);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}
