//! The jobs API surface: 202 + Location, filters, sorting and cursor pagination,
//! read-your-writes while the read model lags, request ids, and event metadata.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::support::{problem, TestApp};

#[tokio::test]
async fn submitting_answers_202_with_the_job_and_its_location() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let response = app
        .post(
            "/api/v1/jobs",
            &key,
            json!({"kind": "transcription", "input": {"lang": "fr"}, "priority": 7, "metadata": {"team": "a"}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["project_id"], project.to_string());
    assert_eq!(job["status"], "queued");
    assert_eq!(job["priority"], 7);
    assert_eq!(job["max_attempts"], 3);
    assert_eq!(job["metadata"]["team"], "a");
    let fetched: Value = app.get(&location, &key).await.json().await.unwrap();
    assert_eq!(fetched, job);
}

#[tokio::test]
async fn lists_filter_sort_and_page_with_an_opaque_cursor() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            app.submit_job(&key, json!({"kind": kind}))
                .await
                .to_string(),
        );
    }
    app.wait_for_projections().await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/jobs?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path, &key).await.json().await.unwrap();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                path = format!("/api/v1/jobs?limit=2&cursor={cursor}");
            }
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let oldest_first: Value = app
        .get("/api/v1/jobs?sort=created_at", &key)
        .await
        .json()
        .await
        .unwrap();
    let first = oldest_first["data"][0]["id"].as_str().unwrap();
    assert_eq!(first, ids[0]);

    let odd: Value = app
        .get("/api/v1/jobs?kind=odd", &key)
        .await
        .json()
        .await
        .unwrap();
    let odd: HashSet<&str> = odd["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(odd, HashSet::from([ids[1].as_str(), ids[3].as_str()]));

    let none: Value = app
        .get("/api/v1/jobs?status=running", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let future: Value = app
        .get("/api/v1/jobs?created_after=2999-01-01T00:00:00Z", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["data"].as_array().unwrap().len(), 0);
    let bad_cursor = app.get("/api/v1/jobs?cursor=not-a-cursor", &key).await;
    assert_eq!(bad_cursor.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_read_right_after_a_write_reflects_it_even_while_the_read_model_is_stalled() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let id = app.submit_job(&key, json!({"kind": "render"})).await;
    app.wait_for_projections().await;

    // Hold the jobs checkpoint row: the runner blocks and the read model stops moving.
    let mut blocker = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM projection_checkpoints WHERE name = 'jobs' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();

    for round in 0..3 {
        let patch = app
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/jobs/{id}/metadata"),
                &key,
            )
            .json(&json!({"metadata": {"round": round.to_string()}}))
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), StatusCode::OK);
        let job: Value = app
            .get(&format!("/api/v1/jobs/{id}"), &key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(job["metadata"]["round"], round.to_string());
    }
    let stale: (Value,) = sqlx::query_as("SELECT doc->'metadata' FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stale.0, json!({}), "the read model really was behind");
    tx.rollback().await.unwrap();

    app.wait_for_projections().await;
    let caught_up: (Value,) = sqlx::query_as("SELECT doc->'metadata' FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(caught_up.0, json!({"round": "2"}));

    // A patch that changes nothing answers the job and records nothing.
    let before = crate::support::event_count(&app.pool).await;
    for unchanged in [json!({}), json!({"round": "2"}), json!({"absent": null})] {
        let patch = app
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/jobs/{id}/metadata"),
                &key,
            )
            .json(&json!({ "metadata": unchanged }))
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), StatusCode::OK, "{unchanged}");
        let job: Value = patch.json().await.unwrap();
        assert_eq!(job["metadata"], json!({"round": "2"}), "{unchanged}");
    }
    assert_eq!(crate::support::event_count(&app.pool).await, before);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_events_record_who_caused_them() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let response = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("X-Request-Id", "req-from-client-42")
        .header("User-Agent", "render-farm/1.0")
        .json(&json!({"kind": "render"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-from-client-42");
    let job: Value = response.json().await.unwrap();

    let generated = app.get("/no/such/route", &key).await;
    assert!(!generated.headers()["x-request-id"].is_empty());

    let (metadata,): (Value,) = sqlx::query_as(
        "SELECT metadata::jsonb FROM events WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(job["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let key_id = &key["hrld_live_".len().."hrld_live_".len() + 16];
    assert_eq!(metadata["actor_type"], "api_key");
    assert_eq!(metadata["actor_id"], key_id);
    assert_eq!(metadata["request_id"], "req-from-client-42");
    assert_eq!(metadata["ip"], "127.0.0.1");
    assert_eq!(metadata["user_agent"], "render-farm/1.0");
    let stored: String =
        sqlx::query_scalar("SELECT string_agg(payload::text || metadata::text, '') FROM events")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!stored.contains(&key), "no key ever enters an event");
}

#[tokio::test]
async fn health_live_and_ready_answer() {
    let app = TestApp::spawn().await;
    for path in ["/health", "/live", "/ready"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "ok");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    // A body that arrives slowly keeps the request in flight while shutdown begins.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let stream = futures::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    });
    let request = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let in_flight = tokio::spawn(request);
    sender.send(Ok(b"{\"kind\": ".to_vec())).await.unwrap();
    app.until_a_call_is_handled().await;
    let base_url = app.base_url.clone();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    sender.send(Ok(b"\"render\"}".to_vec())).await.unwrap();
    drop(sender);
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    stopping.await.unwrap();
    let refused = reqwest::get(format!("{base_url}/live")).await;
    assert!(refused.is_err(), "the server no longer accepts connections");
}

#[tokio::test]
async fn a_cursor_pages_only_in_its_own_sort_and_times_are_checked() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.submit_job(&key, json!({"kind": "render"}))
                .await
                .to_string(),
        );
    }
    app.wait_for_projections().await;
    let page: Value = app
        .get("/api/v1/jobs?limit=2&sort=created_at", &key)
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    // Oldest first, the cursor goes on to the third job.
    let next: Value = app
        .get(
            &format!("/api/v1/jobs?limit=2&sort=created_at&cursor={cursor}"),
            &key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["data"][0]["id"], ids[2].as_str());
    let newest: Value = app
        .get("/api/v1/jobs?limit=2", &key)
        .await
        .json()
        .await
        .unwrap();
    let newest_cursor = newest["next_cursor"].as_str().unwrap().to_owned();
    for path in [
        format!("/api/v1/jobs?limit=2&cursor={cursor}"),
        format!("/api/v1/jobs?limit=2&sort=created_at&cursor={newest_cursor}"),
    ] {
        let refused = app.get(&path, &key).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(problem(refused).await["errors"][0]["field"], "cursor");
    }
    for (query, field) in [
        (
            "created_after=2026-12-08T00:00:00Z&created_before=2026-12-07T00:00:00Z",
            "created_before",
        ),
        ("created_after=0000-01-01T00:00:00Z", "created_after"),
    ] {
        let refused = app.get(&format!("/api/v1/jobs?{query}"), &key).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            problem(refused).await["errors"][0]["field"],
            field,
            "{query}"
        );
    }
    let same = "created_after=2026-12-07T00:00:00Z&created_before=2026-12-07T00:00:00Z";
    let empty = app.get(&format!("/api/v1/jobs?{same}"), &key).await;
    assert_eq!(
        empty.status(),
        StatusCode::OK,
        "an empty range is not a mistake"
    );
}
