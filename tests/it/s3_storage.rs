//! The same file flows against an S3-compatible store (moto in server mode, started by
//! `scripts/test-s3.sh`): a resumable upload in chunks becomes a job's input, a job sent as a
//! form carries its file, a worker's result file is downloaded whole and by range, and the
//! bytes are in the bucket (read back through a second, independent store client) until the
//! job is deleted.

use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::files_support::{bytes, fetch, sha256, upload};
use crate::support::TestApp;

fn s3() -> (String, String) {
    let endpoint = std::env::var("TEST_S3_ENDPOINT").expect(
        "TEST_S3_ENDPOINT is not set: run the tests with ./scripts/test, which starts an S3 server",
    );
    let bucket = std::env::var("TEST_S3_BUCKET").unwrap_or_else(|_| "herald-test".into());
    (endpoint, bucket)
}

#[tokio::test]
async fn uploads_jobs_and_results_work_against_s3_compatible_storage() {
    let (endpoint, bucket) = s3();
    let app = TestApp::spawn_with(|config| {
        config.storage.kind = herald_api::storage::StorageKind::S3;
        config.storage.s3_endpoint = endpoint.clone();
        config.storage.s3_bucket = bucket.clone();
        config.storage.s3_access_key_id = herald_api::config::Secret::new("test");
        config.storage.s3_secret_access_key = herald_api::config::Secret::new("test");
    })
    .await;
    assert!(app.state.storage.description.starts_with("s3 bucket"));
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;

    // Chunks of 5 MiB and a remainder: more than one part of the assembled object.
    let data = bytes(11 * 1024 * 1024 + 123, 8);
    let upload_id = upload(&app, &key, "lecture.wav", &data, 5 * 1024 * 1024).await;
    let job = app
        .submit_job(
            &key,
            json!({"kind": "transcribe", "input": {"upload_id": upload_id}}),
        )
        .await;
    let leased = app
        .lease(&worker, json!({"kinds": ["transcribe"]}))
        .await
        .unwrap();
    assert_eq!(leased["id"], job.to_string());
    let input_url = leased["input_files"][0]["url"].as_str().unwrap().to_owned();
    let (status, _, got) = fetch(&app, &worker, &input_url, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256(&got), sha256(&data));

    let result = bytes(300_000, 2);
    let form = Form::new().text("result", r#"{"ok": true}"#).part(
        "files",
        Part::bytes(result.clone())
            .file_name("out.vtt")
            .mime_str("text/vtt")
            .unwrap(),
    );
    let done = app
        .request(
            Method::POST,
            &format!("/api/v1/jobs/{job}/complete"),
            &worker,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let done: Value = done.json().await.unwrap();
    let (status, headers, got) = fetch(
        &app,
        &key,
        &format!("/api/v1/jobs/{job}/download"),
        Some("bytes=1000-1999"),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers["content-type"], "text/vtt");
    assert_eq!(got, result[1000..2000]);

    // A job sent as a form stores its file in the bucket too.
    let form = Form::new()
        .text("kind", "render")
        .part("file", Part::bytes(vec![7; 4096]).file_name("scene.blend"));
    let submitted = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);

    // The objects are really in the bucket: a second client, configured on its own, sees them.
    let mut settings = app.state.config.storage.clone();
    settings.s3_bucket = bucket.clone();
    let other = settings.open(std::path::Path::new("/nonexistent")).unwrap();
    let ids: Vec<uuid::Uuid> = [
        &done["input_files"][0]["id"],
        &done["result_files"][0]["id"],
    ]
    .iter()
    .map(|v| v.as_str().unwrap().parse().unwrap())
    .collect();
    for id in &ids {
        assert!(other
            .exists(&herald_api::storage::file_key(*id))
            .await
            .unwrap());
    }
    let response = app
        .request(Method::DELETE, &format!("/api/v1/jobs/{job}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for id in &ids {
        assert!(!other
            .exists(&herald_api::storage::file_key(*id))
            .await
            .unwrap());
    }
    app.stop().await;
}
