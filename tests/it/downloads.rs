//! Downloading results: a transcript rendered as SRT and WebVTT parses with independent parsers
//! (the `srt` and `webvtt-py` packages that `scripts/test` installs), text and JSON are what
//! the result says, byte ranges are honoured, and the refusals: not yet succeeded (409), not a
//! transcript (422), unknown format (400), expired (410).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

fn transcript() -> Value {
    json!({
        "language": "en",
        "segments": [
            {"start": 0.0, "end": 1.5, "text": "Hello, world."},
            {"start": 1.5, "end": 4.25, "text": "Second line\nwith a break --> and an arrow"},
            {"start": 3725.0, "end": 3726.999, "text": "After an hour."}
        ]
    })
}

/// Parses `text` with the Python parser `kind` (`srt` or `vtt`); returns its cues as
/// `[[start, end, text], ...]` in the parser's own notation.
async fn parse(kind: &str, text: &str) -> Value {
    let program = match kind {
        "srt" => "import srt,sys,json; print(json.dumps([[str(c.start), str(c.end), c.content] for c in srt.parse(sys.stdin.read())]))",
        _ => "import webvtt,sys,json; print(json.dumps([[c.start, c.end, c.text] for c in webvtt.from_string(sys.stdin.read())]))",
    };
    let pydeps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps");
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", program])
        .env("PYTHONPATH", pydeps)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{kind} parser: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn finished_job(app: &TestApp, key: &str, worker: &str, result: Value) -> uuid::Uuid {
    let job = app.submit_job(key, json!({"kind": "transcription"})).await;
    app.wait_for_projections().await;
    app.lease(worker, json!({"kinds": ["transcription"]}))
        .await
        .unwrap();
    let done = app
        .post(
            &format!("/api/v1/jobs/{job}/complete"),
            worker,
            json!({ "result": result }),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    job
}

#[tokio::test]
async fn transcripts_download_in_every_format_and_refusals_are_clear() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let job = finished_job(&app, &key, &worker, transcript()).await;
    let download = |query: &str| {
        app.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{job}/download{query}"),
            &key,
        )
    };

    let formats: Value = app
        .get("/api/v1/export/formats", &key)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = formats["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["json", "txt", "srt", "vtt"]);

    let srt = download("?format=srt").send().await.unwrap();
    assert_eq!(srt.status(), StatusCode::OK);
    assert!(srt.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-subrip"));
    assert_eq!(
        srt.headers()["content-disposition"],
        format!("attachment; filename=\"job-{job}.srt\"").as_str()
    );
    let cues = parse("srt", &srt.text().await.unwrap()).await;
    assert_eq!(
        cues,
        json!([
            ["0:00:00", "0:00:01.500000", "Hello, world."],
            [
                "0:00:01.500000",
                "0:00:04.250000",
                "Second line\nwith a break -> and an arrow"
            ],
            ["1:02:05", "1:02:06.999000", "After an hour."]
        ])
    );

    let vtt = download("?format=vtt").send().await.unwrap();
    assert!(vtt.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/vtt"));
    let cues = parse("vtt", &vtt.text().await.unwrap()).await;
    assert_eq!(
        cues,
        json!([
            ["00:00:00.000", "00:00:01.500", "Hello, world."],
            [
                "00:00:01.500",
                "00:00:04.250",
                "Second line\nwith a break -> and an arrow"
            ],
            ["01:02:05.000", "01:02:06.999", "After an hour."]
        ])
    );

    let txt = download("?format=txt")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        txt,
        "Hello, world.\nSecond line\nwith a break --> and an arrow\nAfter an hour.\n"
    );
    let as_json: Value = download("?format=json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(as_json["segments"], transcript()["segments"]);
    let plain: Value = download("").send().await.unwrap().json().await.unwrap();
    assert_eq!(plain, transcript(), "without a format: the JSON result");

    // Byte ranges.
    let partial = download("?format=txt")
        .header("Range", "bytes=0-4")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 0-4/{}", txt.len()).as_str()
    );
    assert_eq!(partial.text().await.unwrap(), "Hello");
    let tail = download("?format=txt")
        .header("Range", "bytes=-15")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.text().await.unwrap(), "After an hour.\n");
    let outside = download("?format=txt")
        .header("Range", format!("bytes={}-", txt.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        outside.headers()["content-range"],
        format!("bytes */{}", txt.len()).as_str()
    );
    assert_eq!(problem(outside).await["code"], "RANGE_NOT_SATISFIABLE");

    // Refusals.
    let bad = download("?format=docx").send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(bad).await["errors"][0]["field"], "format");
    let queued = app.submit_job(&key, json!({"kind": "other"})).await;
    let early = app
        .get(&format!("/api/v1/jobs/{queued}/download"), &key)
        .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert_eq!(problem(early).await["code"], "JOB_NOT_SUCCEEDED");
    let other = finished_job(&app, &key, &worker, json!({"ok": true})).await;
    let not_transcript = app
        .get(&format!("/api/v1/jobs/{other}/download?format=srt"), &key)
        .await;
    assert_eq!(not_transcript.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem(not_transcript).await["code"],
        "RESULT_NOT_A_TRANSCRIPT"
    );

    // After retention the download is gone, the job and its outcome stay.
    let sweeper = herald_api::expiry::ExpirySweeper::new(app.state.clone());
    app.wait_for_projections().await;
    let later = chrono::Utc::now() + chrono::Duration::hours(25);
    assert_eq!(sweeper.run_once(later).await.unwrap().jobs, 2);
    let gone = download("?format=srt").send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::GONE);
    assert_eq!(problem(gone).await["code"], "JOB_EXPIRED");
    let read: Value = app
        .get(&format!("/api/v1/jobs/{job}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["status"], "succeeded");
}
