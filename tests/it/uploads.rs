//! Resumable uploads over HTTP against real storage: chunks in any order and sent twice, a
//! bad chunk refused without touching the good copy, completion checked against the declared
//! SHA-256, the finished file used as a job's input and read back by the worker (whole and by
//! range), a file serving one job only, and a chunk larger than the request-body memory limit.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::files_support::{bytes, fetch, open_upload, put_chunk, sha256, upload};
use crate::support::{problem, TestApp};

const CHUNK: usize = 64 * 1024;

#[tokio::test]
async fn chunks_arrive_in_any_order_and_the_finished_file_is_a_jobs_input() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let data = bytes(CHUNK * 2 + 1000, 7);
    let opened = open_upload(&app, &key, "talk.wav", &data, CHUNK).await;
    assert_eq!(opened["chunk_count"], 3);
    assert_eq!(opened["status"], "uploading");
    assert_eq!(opened["missing_chunks"], json!([0, 1, 2]));
    let id = opened["id"].as_str().unwrap().to_owned();
    let parts: Vec<&[u8]> = data.chunks(CHUNK).collect();

    // Out of order, and chunk 2 twice.
    for n in [2, 0, 2] {
        let response = put_chunk(&app, &key, &id, n, parts[n], None).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A chunk whose bytes do not match its checksum is refused and changes nothing: the good
    // copy of chunk 0 stays.
    let wrong = put_chunk(&app, &key, &id, 0, parts[1], Some(&sha256(parts[0]))).await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(wrong).await["code"], "CHECKSUM_MISMATCH");
    // So is one of the wrong size, and a chunk number past the end.
    let short = put_chunk(&app, &key, &id, 1, &parts[1][..100], None).await;
    assert_eq!(problem(short).await["code"], "CHUNK_SIZE_MISMATCH");
    // A longer one is refused once it runs past its length, not after all of it was stored.
    let long = [parts[1], parts[1]].concat();
    let long = problem(put_chunk(&app, &key, &id, 1, &long, None).await).await;
    assert_eq!(long["code"], "CHUNK_SIZE_MISMATCH");
    assert!(
        long["detail"].as_str().unwrap().contains("more arrived"),
        "{long}"
    );
    let past = put_chunk(&app, &key, &id, 3, parts[2], None).await;
    assert_eq!(past.status(), StatusCode::BAD_REQUEST);
    let unsigned = app
        .request(Method::PUT, &format!("/api/v1/uploads/{id}/chunks/1"), &key)
        .body(parts[1].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(unsigned).await["errors"][0]["field"],
        "X-Chunk-Sha256"
    );

    let status: Value = app
        .get(&format!("/api/v1/uploads/{id}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["missing_chunks"], json!([1]));
    assert_eq!(status["received_chunks"], 2);
    let early = app
        .post(&format!("/api/v1/uploads/{id}/complete"), &key, json!({}))
        .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert_eq!(problem(early).await["code"], "UPLOAD_INCOMPLETE");

    assert_eq!(
        put_chunk(&app, &key, &id, 1, parts[1], None).await.status(),
        StatusCode::OK
    );
    let done = app
        .post(&format!("/api/v1/uploads/{id}/complete"), &key, json!({}))
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "complete");
    assert_eq!(done["sha256"], sha256(&data));
    // Completing again answers the same upload; a complete upload takes no more chunks.
    let again = app
        .post(&format!("/api/v1/uploads/{id}/complete"), &key, json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::OK);
    let late = put_chunk(&app, &key, &id, 0, parts[0], None).await;
    assert_eq!(problem(late).await["code"], "UPLOAD_NOT_OPEN");

    let job = app
        .submit_job(
            &key,
            json!({"kind": "transcribe", "input": {"upload_id": id, "lang": "en"}}),
        )
        .await;
    let body: Value = app
        .get(&format!("/api/v1/jobs/{job}"), &key)
        .await
        .json()
        .await
        .unwrap();
    let file = &body["input_files"][0];
    assert_eq!(file["filename"], "talk.wav");
    assert_eq!(file["content_type"], "audio/wav");
    assert_eq!(file["size"], data.len());
    assert_eq!(file["sha256"], sha256(&data));
    assert_eq!(body["input"]["lang"], "en");

    // The worker fetches the input, whole and by range.
    let leased = app
        .lease(&worker, json!({"kinds": ["transcribe"]}))
        .await
        .unwrap();
    let url = leased["input_files"][0]["url"].as_str().unwrap().to_owned();
    let (status, headers, got) = fetch(&app, &worker, &url, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "audio/wav");
    assert!(got == data, "the stored file differs from the uploaded one");
    let (status, headers, got) = fetch(&app, &worker, &url, Some("bytes=65530-65545")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        headers["content-range"],
        format!("bytes 65530-65545/{}", data.len()).as_str()
    );
    assert_eq!(got, data[65530..=65545]);

    // Another project neither sees the upload nor can use it.
    let (_, stranger) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    let hidden = app.get(&format!("/api/v1/uploads/{id}"), &stranger).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    let borrowed = app
        .post(
            "/api/v1/jobs",
            &stranger,
            json!({"kind": "transcribe", "input": {"upload_id": id}}),
        )
        .await;
    assert_eq!(borrowed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        problem(borrowed).await["errors"][0]["field"],
        "input.upload_id"
    );
    let peek = fetch(&app, &stranger, &url, None).await;
    assert_eq!(peek.0, StatusCode::NOT_FOUND);

    // A file serves one job.
    let second = app
        .post(
            "/api/v1/jobs",
            &key,
            json!({"kind": "transcribe", "input": {"upload_id": id}}),
        )
        .await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(problem(second).await["code"], "UPLOAD_IN_USE");
    app.stop().await;
}

#[tokio::test]
async fn a_whole_file_that_does_not_match_its_declared_checksum_is_not_completed() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let data = bytes(1000, 1);
    let body =
        json!({"filename": "a.bin", "size": 1000, "chunk_size": 600, "sha256": sha256(b"other")});
    let opened: Value = app
        .post("/api/v1/uploads", &key, body)
        .await
        .json()
        .await
        .unwrap();
    let id = opened["id"].as_str().unwrap();
    for (n, part) in data.chunks(600).enumerate() {
        assert_eq!(
            put_chunk(&app, &key, id, n, part, None).await.status(),
            StatusCode::OK
        );
    }
    let done = app
        .post(&format!("/api/v1/uploads/{id}/complete"), &key, json!({}))
        .await;
    assert_eq!(done.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(done).await["code"], "CHECKSUM_MISMATCH");
    // Still open: a chunk can be sent again.
    let status: Value = app
        .get(&format!("/api/v1/uploads/{id}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "uploading");
    // Not usable by a job.
    let job = app
        .post(
            "/api/v1/jobs",
            &key,
            json!({"kind": "k", "input": {"upload_id": id}}),
        )
        .await;
    assert_eq!(problem(job).await["code"], "UPLOAD_NOT_COMPLETE");
    // Bad declarations are refused with the field named.
    let bad = app
        .post(
            "/api/v1/uploads",
            &key,
            json!({"filename": "a", "size": 0, "sha256": "xyz"}),
        )
        .await;
    let fields: Vec<Value> = problem(bad).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].clone())
        .collect();
    assert_eq!(fields, vec![json!("size"), json!("sha256")]);
    app.stop().await;
}

#[tokio::test]
async fn a_chunk_larger_than_the_memory_limit_for_bodies_streams_to_storage() {
    let app = TestApp::spawn_with(|config| {
        config.http.max_body_bytes = 64 * 1024;
        config.uploads.max_chunk_bytes = 4 * 1024 * 1024;
    })
    .await;
    let (_, key) = app.project_with_key(&["jobs:write", "jobs:read"]).await;
    // A JSON body over the limit is refused...
    let big_json = json!({"kind": "k", "input": {"pad": "x".repeat(70 * 1024)}});
    let refused = app.post("/api/v1/jobs", &key, big_json).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // ...while a 3 MiB chunk (48 times that limit) streams through.
    let data = bytes(3 * 1024 * 1024, 3);
    let id = upload(&app, &key, "big.bin", &data, data.len()).await;
    let job = app
        .submit_job(&key, json!({"kind": "k", "input": {"upload_id": id}}))
        .await;
    let body: Value = app
        .get(&format!("/api/v1/jobs/{job}"), &key)
        .await
        .json()
        .await
        .unwrap();
    let url = body["input_files"][0]["url"].as_str().unwrap().to_owned();
    let (_, _, got) = fetch(&app, &key, &url, None).await;
    assert!(got == data);

    // Past the chunk limit, sent without a length (chunked encoding), the edge stops it: 413.
    let opened = open_upload(
        &app,
        &key,
        "huge.bin",
        &bytes(8 * 1024 * 1024, 0),
        4 * 1024 * 1024,
    )
    .await;
    let upload_id = opened["id"].as_str().unwrap();
    let stream =
        futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![0u8; 1024 * 1024])));
    let too_big = app
        .request(
            Method::PUT,
            &format!("/api/v1/uploads/{upload_id}/chunks/0"),
            &key,
        )
        .header("X-Chunk-Sha256", sha256(b"x"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(too_big).await["code"], "PAYLOAD_TOO_LARGE");
    let status: Value = app
        .get(&format!("/api/v1/uploads/{upload_id}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["received_chunks"], 0);
    app.stop().await;
}
