//! Jobs and results that carry files, over HTTP against real storage: a job sent as a
//! multipart form with its input file, result files attached by a worker (as multipart parts
//! and as completed uploads), the result file downloaded with its type, name and ranges, a form
//! over the size limit refused with nothing recorded, a retried keyed form answered once, and
//! the files removed when the job expires (410 after) or is deleted (at once), as are uploads
//! no job took in time.

use chrono::{Duration, Utc};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::files_support::{bytes, fetch, open_upload, put_chunk, sha256, upload};
use crate::support::{event_count, problem, TestApp};

fn job_form(data: &[u8]) -> Form {
    Form::new()
        .text("kind", "captions.generate")
        .text("input", r#"{"language": "en"}"#)
        .text("metadata", r#"{"customer": "acme"}"#)
        .text("priority", "7")
        .part(
            "file",
            Part::bytes(data.to_vec())
                .file_name("talk.mp4")
                .mime_str("video/mp4")
                .unwrap(),
        )
}

async fn submit_form(app: &TestApp, key: &str, form: Form) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/jobs", key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Submits a job with an input file and completes it with two result files; returns the job.
pub async fn finished_job_with_files(app: &TestApp, key: &str, worker: &str) -> Value {
    let input = bytes(200_000, 9);
    let submitted = submit_form(app, key, job_form(&input)).await;
    assert_eq!(
        submitted.status(),
        StatusCode::ACCEPTED,
        "{}",
        submitted.text().await.unwrap()
    );
    let job: Value = submitted.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let leased = app
        .lease(worker, json!({"kinds": ["captions.generate"]}))
        .await
        .unwrap();
    assert_eq!(leased["id"], job["id"]);
    let captions = b"1\n00:00:00,000 --> 00:00:01,000\nHello\n".to_vec();
    let form = Form::new()
        .text("result", r#"{"lines": 1}"#)
        .part(
            "files",
            Part::bytes(captions)
                .file_name("talk.srt")
                .mime_str("application/x-subrip")
                .unwrap(),
        )
        .part(
            "files",
            Part::bytes(bytes(5000, 4))
                .file_name("thumb.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let done = app
        .request(Method::POST, &format!("/api/v1/jobs/{id}/complete"), worker)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        StatusCode::OK,
        "{}",
        done.text().await.unwrap()
    );
    done.json().await.unwrap()
}

#[tokio::test]
async fn a_job_sent_as_a_form_carries_its_file_and_its_worker_attaches_results() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let job = finished_job_with_files(&app, &key, &worker).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["priority"], 7);
    assert_eq!(job["metadata"]["customer"], "acme");
    assert_eq!(job["input"]["language"], "en");
    assert_eq!(job["input"]["upload_id"], job["input_files"][0]["id"]);
    assert_eq!(job["input_files"][0]["filename"], "talk.mp4");
    assert_eq!(job["input_files"][0]["sha256"], sha256(&bytes(200_000, 9)));
    assert_eq!(job["result"], json!({"lines": 1}));
    let names: Vec<&str> = job["result_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["talk.srt", "thumb.png"]);

    // The download is the first result file, with its type and name; another by name.
    let path = format!("/api/v1/jobs/{id}/download");
    let (status, headers, body) = fetch(&app, &key, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-subrip");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("filename=\"talk.srt\""));
    assert!(body.starts_with(b"1\n00:00:00,000"));
    let (_, headers, body) = fetch(&app, &key, &format!("{path}?file=thumb.png"), None).await;
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(body, bytes(5000, 4));
    let (status, _, body) = fetch(
        &app,
        &key,
        &format!("{path}?file=thumb.png"),
        Some("bytes=-10"),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, bytes(5000, 4)[4990..]);
    let (status, headers, _) = fetch(
        &app,
        &key,
        &format!("{path}?file=thumb.png"),
        Some("bytes=5000-"),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers["content-range"], "bytes */5000");
    let (status, _, _) = fetch(&app, &key, &format!("{path}?file=nope.txt"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A result file may also be a completed upload, referenced by id.
    let second = app
        .submit_job(&key, json!({"kind": "captions.generate"}))
        .await;
    app.lease(&worker, json!({"kinds": ["captions.generate"]}))
        .await
        .unwrap();
    let result = bytes(70_000, 5);
    let upload_id = upload(&app, &worker, "out.wav", &result, 30_000).await;
    let done = app
        .post(
            &format!("/api/v1/jobs/{second}/complete"),
            &worker,
            json!({"result": {}, "files": [{"upload_id": upload_id}]}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let (_, headers, body) =
        fetch(&app, &key, &format!("/api/v1/jobs/{second}/download"), None).await;
    assert_eq!(headers["content-type"], "audio/wav");
    assert!(body == result);
    app.stop().await;
}

#[tokio::test]
async fn refused_forms_record_nothing_and_a_retried_keyed_form_is_answered_once() {
    let app = TestApp::spawn_with(|config| config.uploads.max_multipart_bytes = 100_000).await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let before = event_count(&app.pool).await;
    let files_before: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Over the size limit (1 MiB past the file limit, for the form's other fields).
    let too_big = submit_form(&app, &key, job_form(&bytes(100_000 + 1_100_000, 1))).await;
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Without a kind, or with input that is not JSON.
    let no_kind = Form::new().part("file", Part::bytes(vec![1, 2, 3]).file_name("a"));
    assert_eq!(
        submit_form(&app, &key, no_kind).await.status(),
        StatusCode::BAD_REQUEST
    );
    let bad_input = Form::new()
        .text("kind", "k")
        .text("input", "{not json")
        .part("file", Part::bytes(vec![1, 2, 3]).file_name("a"));
    let refused = submit_form(&app, &key, bad_input).await;
    assert_eq!(problem(refused).await["errors"][0]["field"], "input");
    // A text field larger than a JSON body may be (1 MiB by default) is refused too.
    let huge_input = Form::new()
        .text("kind", "k")
        .text(
            "input",
            format!(r#"{{"pad": "{}"}}"#, "x".repeat(1024 * 1024)),
        )
        .part("file", Part::bytes(vec![1, 2, 3]).file_name("a"));
    let refused = submit_form(&app, &key, huge_input).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(refused).await["errors"][0]["field"], "input");
    assert_eq!(event_count(&app.pool).await, before);
    let files_after: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(files_after, files_before, "a refused form stored a file");

    // A worker without the lease stores nothing either.
    let job = app.submit_job(&key, json!({"kind": "k"})).await;
    let form = Form::new().part("files", Part::bytes(vec![1; 10]).file_name("r.txt"));
    let early = app
        .request(
            Method::POST,
            &format!("/api/v1/jobs/{job}/complete"),
            &worker,
        )
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(early.status(), StatusCode::CONFLICT);
    let files_now: i64 = sqlx::query_scalar("SELECT count(*) FROM files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(files_now, files_before);

    // The same keyed form twice: one job, the same answer.
    let data = bytes(50_000, 2);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = app
            .request(Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", "form-1")
            .multipart(job_form(&data))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    // The same key with another file is a different request: 422.
    let other = app
        .request(Method::POST, "/api/v1/jobs", &key)
        .header("Idempotency-Key", "form-1")
        .multipart(job_form(&bytes(50_000, 3)))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[tokio::test]
async fn files_go_when_their_job_expires_or_is_deleted_and_unused_uploads_expire() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let storage = app.state.storage.clone();
    let exists = |id: &Value| {
        let storage = storage.clone();
        let id: uuid::Uuid = id.as_str().unwrap().parse().unwrap();
        async move {
            storage
                .exists(&herald_api::storage::file_key(id))
                .await
                .unwrap()
        }
    };

    let expiring = finished_job_with_files(&app, &key, &worker).await;
    let deleted = finished_job_with_files(&app, &key, &worker).await;
    let all = |job: &Value| -> Vec<Value> {
        let mut ids = vec![job["input_files"][0]["id"].clone()];
        ids.extend(
            job["result_files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].clone()),
        );
        ids
    };
    for id in all(&expiring).iter().chain(&all(&deleted)) {
        assert!(exists(id).await);
    }
    // An upload no job takes, and one never finished.
    let unused = upload(&app, &key, "unused.bin", &bytes(1000, 1), 1000).await;
    let unfinished = open_upload(&app, &key, "half.bin", &bytes(2000, 1), 1000).await;
    let unfinished_id = unfinished["id"].as_str().unwrap();
    let first_half = &bytes(2000, 1)[..1000];
    assert_eq!(
        put_chunk(&app, &key, unfinished_id, 0, first_half, None)
            .await
            .status(),
        StatusCode::OK
    );

    // Deleting a job removes its files at once.
    let deleted_id = deleted["id"].as_str().unwrap();
    let response = app
        .request(Method::DELETE, &format!("/api/v1/jobs/{deleted_id}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for id in all(&deleted) {
        assert!(!exists(&id).await, "a deleted job's file is still stored");
    }

    // 25 hours later the sweeper expires the other job, its files, and both uploads.
    app.wait_for_projections().await;
    let sweeper = herald_api::expiry::ExpirySweeper::new(app.state.clone());
    let swept = sweeper
        .run_once(Utc::now() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!(swept.jobs, 1);
    assert_eq!(swept.files, 3 + 2);
    for id in all(&expiring) {
        assert!(!exists(&id).await, "an expired job's file is still stored");
    }
    let id = expiring["id"].as_str().unwrap();
    let (status, _, _) = fetch(&app, &key, &format!("/api/v1/jobs/{id}/download"), None).await;
    assert_eq!(status, StatusCode::GONE);
    let file = expiring["result_files"][0]["url"].as_str().unwrap();
    let (status, _, _) = fetch(&app, &key, file, None).await;
    assert_eq!(status, StatusCode::GONE);
    for upload in [unused.to_string(), unfinished_id.to_owned()] {
        let body: Value = app
            .get(&format!("/api/v1/uploads/{upload}"), &key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "expired");
    }
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM upload_chunks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(chunks, 0);
    assert!(!exists(&json!(unused.to_string())).await);
    // A second sweep finds nothing left to do.
    let again = sweeper
        .run_once(Utc::now() + Duration::hours(25))
        .await
        .unwrap();
    assert_eq!((again.jobs, again.files), (0, 0));
    app.stop().await;
}
