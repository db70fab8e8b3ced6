//! Server-sent event streams over real HTTP: the log stream resumed with `Last-Event-ID` after a
//! disconnect in the middle of a burst of writes loses nothing and repeats nothing, and shows a
//! caller only its own project; a job's stream sends its history and then its new events live;
//! a stream whose key is revoked ends.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestApp;

/// One server-sent event: its id, event name and JSON data.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// An open stream, read message by message.
struct Stream {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl Stream {
    async fn open(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next message (skipping keep-alive comments), or `None` after `within`.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .map(str::to_owned)
                };
                if let Some(data) = field("data") {
                    return Some(Sse {
                        id: field("id").unwrap_or_default(),
                        event: field("event").unwrap_or_default(),
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }
}

impl Stream {
    /// What the stream sends until it ends, if it ends within `within`.
    async fn rest(mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(self.buffer),
                Ok(Some(chunk)) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            }
        }
    }
}

async fn open_log(app: &TestApp, key: &str, last_event_id: Option<&str>) -> Stream {
    let mut request = app.request(
        reqwest::Method::GET,
        "/api/v1/events/stream?types=job.queued",
        key,
    );
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    Stream::open(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_resumed_log_stream_misses_nothing_and_repeats_nothing() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let (_, other_key) = app.project_with_key(&["jobs:write"]).await;
    let mut first = open_log(&app, &key, None).await;

    // Thirty submissions (and some in another project) while the client reads and reconnects.
    let writer = {
        let (client, base) = (app.client.clone(), app.base_url.clone());
        let (key, other_key) = (key.clone(), other_key.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..30 {
                let caller = if i % 5 == 0 { &other_key } else { &key };
                let response = client
                    .post(format!("{base}/api/v1/jobs"))
                    .header("X-API-Key", caller)
                    .json(&json!({"kind": "render"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                let job: Value = response.json().await.unwrap();
                if i % 5 != 0 {
                    ids.push(job["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            ids
        })
    };
    let mut received = Vec::new();
    while received.len() < 8 {
        let message = first.next(Duration::from_secs(10)).await.expect("an event");
        received.push(message);
    }
    drop(first); // disconnect in the middle of the burst
    let last = received.last().unwrap().id.clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = open_log(&app, &key, Some(&last)).await;
    let submitted = writer.await.unwrap();
    while received.len() < submitted.len() {
        match second.next(Duration::from_secs(10)).await {
            Some(message) => received.push(message),
            None => break,
        }
    }
    assert!(
        second.next(Duration::from_millis(500)).await.is_none(),
        "nothing more"
    );

    let ids: Vec<String> = received
        .iter()
        .map(|m| m.data["aggregate_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "nothing twice");
    assert_eq!(
        unique,
        submitted.iter().collect::<BTreeSet<_>>(),
        "everything of the caller's project, nothing of the other"
    );
    for message in &received {
        assert_eq!(message.event, "job.queued");
        assert_eq!(message.id, message.data["global_position"].to_string());
        assert_eq!(message.data["project_id"], project.to_string().as_str());
    }

    let unknown = app
        .request(reqwest::Method::GET, "/api/v1/events/stream", &key)
        .header("Last-Event-ID", "999999999")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_jobs_stream_sends_its_history_then_each_new_event() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    let open = |last: Option<String>| {
        let mut request = app
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{job}/events"),
                &key,
            )
            .header("Accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        request.send()
    };
    let mut stream = Stream::open(open(None).await.unwrap()).await;
    let queued = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(queued.event, "job.queued");

    app.wait_for_projections().await;
    app.lease(&worker, json!({})).await.unwrap();
    let done = app
        .post(
            &format!("/api/v1/jobs/{job}/complete"),
            &worker,
            json!({"result": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let started = stream.next(Duration::from_secs(5)).await.unwrap();
    let succeeded = stream.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (started.event.as_str(), succeeded.event.as_str()),
        ("job.started", "job.succeeded")
    );
    assert_eq!(succeeded.data["data"]["result"], json!({"ok": true}));
    drop(stream);

    // Resumed after the first event: the rest of the history only.
    let mut resumed = Stream::open(open(Some(queued.id.clone())).await.unwrap()).await;
    let next = resumed.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.id, started.id);

    // Without the header, the same route still answers JSON.
    let history: Value = app
        .get(&format!("/api/v1/jobs/{job}/events"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn streams_end_when_their_key_is_revoked() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let writer = app.create_key(Some(project), &["jobs:write"]).await;
    let mut log = open_log(&app, &key, None).await;
    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    let mut history = Stream::open(
        app.request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{job}/events"),
            &key,
        )
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap(),
    )
    .await;
    for stream in [&mut log, &mut history] {
        let queued = stream.next(Duration::from_secs(5)).await.expect("an event");
        assert_eq!(queued.data["aggregate_id"], job.to_string().as_str());
    }

    let id = key.split('_').nth(2).unwrap();
    let revoke = format!("/api/v1/api-keys/{id}/revoke");
    let revoked = app.request(reqwest::Method::POST, &revoke, &app.admin_key);
    assert_eq!(revoked.send().await.unwrap().status(), StatusCode::OK);
    let later = app.submit_job(&writer, json!({"kind": "render"})).await;
    for stream in [log, history] {
        let rest = stream.rest(Duration::from_secs(5)).await;
        let rest = rest.expect("the stream ended");
        assert!(!rest.contains(&later.to_string()), "{rest}");
    }
}
