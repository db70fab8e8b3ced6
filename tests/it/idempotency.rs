//! `Idempotency-Key`: twenty concurrent identical requests make one job; a later retry gets the
//! first answer again; the same key with another body is refused; bad keys are refused; a replay
//! is authenticated and rate-limited like any request, and refused credentials store nothing,
//! nor does input refused before any handler ran; a replay is recorded in the project of the
//! first request; keys are forgotten after a day; a claim left without an answer is taken over
//! by the same request once its call cannot be running any more.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{problem, TestApp};

#[tokio::test]
async fn the_same_keyed_request_twenty_times_at_once_makes_one_job() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let body = json!({"kind": "render", "input": {"frame": 1}});
    let mut requests = Vec::new();
    for _ in 0..20 {
        let request = app
            .request(reqwest::Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", "submit-frame-1")
            .json(&body);
        requests.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.await.unwrap();
        statuses.push(response.status());
        if response.status() == StatusCode::ACCEPTED {
            let job: Value = response.json().await.unwrap();
            ids.insert(job["id"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(response.status(), StatusCode::CONFLICT);
            assert_eq!(problem(response).await["code"], "IDEMPOTENCY_KEY_IN_USE");
        }
    }
    assert_eq!(ids.len(), 1, "statuses {statuses:?}");
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'job.queued'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, 1);

    // A retry later answers the first response again, with its headers.
    let replay = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("Idempotency-Key", "submit-frame-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(
        replay.headers()["location"],
        format!("/api/v1/jobs/{id}").as_str()
    );
    let job: Value = replay.json().await.unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["project_id"], project.to_string());

    let other_body = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("Idempotency-Key", "submit-frame-1")
        .json(&json!({"kind": "render", "input": {"frame": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_body.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(other_body).await["code"], "IDEMPOTENCY_KEY_REUSED");

    // Keys are per caller: another key may use the same one for its own request.
    let other_key = app.create_key(Some(project), &["jobs:write"]).await;
    let theirs = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &other_key)
        .header("Idempotency-Key", "submit-frame-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    assert!(theirs.headers().get("idempotent-replayed").is_none());

    let too_long = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("Idempotency-Key", "k".repeat(256))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
}

async fn stored_keys(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replay_is_authenticated_and_counted_and_refused_credentials_store_nothing() {
    let app = TestApp::spawn_with(|c| c.rate_limits.write_per_minute = 3).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let submit = |credentials: &str| {
        app.request(reqwest::Method::POST, "/api/v1/jobs", credentials)
            .header("Idempotency-Key", "frame-7")
            .json(&json!({"kind": "render"}))
            .send()
    };
    assert_eq!(
        submit("hrld_live_not-a-key").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        stored_keys(&app).await,
        0,
        "a refused request left a key behind"
    );

    assert_eq!(submit(&key).await.unwrap().status(), StatusCode::ACCEPTED);
    let replay = submit(&key).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(
        replay.headers()["x-ratelimit-remaining"],
        "1",
        "a replay is counted"
    );
    submit(&key).await.unwrap();
    let limited = submit(&key).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);

    let id = key.split('_').nth(2).unwrap();
    let revoked = app
        .post(
            &format!("/api/v1/api-keys/{id}/revoke"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = submit(&key).await.unwrap();
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked key got its stored answer"
    );
    assert!(after.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn input_refused_before_the_handler_is_not_kept_so_the_corrected_retry_runs() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let send = |body: &'static str| {
        app.request(Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", "fix-and-retry")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    let malformed = send("{\"kind\": ").await.unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stored_keys(&app).await, 0, "nothing ran, nothing is kept");
    let corrected = send("{\"kind\": \"render\"}").await.unwrap();
    assert_eq!(corrected.status(), StatusCode::ACCEPTED);
    let again = send("{\"kind\": \"render\"}").await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_members_replay_is_recorded_in_the_project_of_the_first_request() {
    let app = TestApp::spawn().await;
    let project = app.create_project("members' project").await;
    let token = app.member_token(project, "editor").await;
    let mut request_ids = Vec::new();
    for attempt in ["first", "replay"] {
        let response = app
            .client
            .post(app.url("/api/v1/jobs"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "member-submits-once")
            .header("X-Request-Id", format!("member-{attempt}"))
            .json(&json!({"kind": "render", "project_id": project}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        request_ids.push(format!("member-{attempt}"));
    }
    let recorded: Vec<(String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT outcome, project_id FROM request_log WHERE request_id = ANY($1) ORDER BY seq",
    )
    .bind(&request_ids)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            ("success".to_owned(), Some(project)),
            ("replayed".to_owned(), Some(project)),
        ]
    );
}

#[tokio::test]
async fn a_key_is_forgotten_a_day_after_it_was_claimed_and_may_then_be_used_anew() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let submit = |idempotency_key: &'static str| {
        app.request(Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({"kind": "render"}))
            .send()
    };
    let first: Value = submit("a-day-ago").await.unwrap().json().await.unwrap();
    submit("this-morning").await.unwrap();
    let age = |key: &'static str, hours: i32| {
        sqlx::query(
            "UPDATE idempotency_keys SET created_at = now() - make_interval(hours => $2) \
              WHERE key = $1",
        )
        .bind(key)
        .bind(hours)
        .execute(&app.pool)
    };
    age("a-day-ago", 25).await.unwrap();
    age("this-morning", 23).await.unwrap();
    let forgotten = herald_api::http::idempotency::forget_expired(&app.pool)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    assert_eq!(
        stored_keys(&app).await,
        1,
        "a key younger than a day is kept"
    );
    let again = submit("a-day-ago").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(again.headers().get("idempotent-replayed").is_none());
    let again: Value = again.json().await.unwrap();
    assert_ne!(again["id"], first["id"], "the forgotten key ran anew");
    let kept = submit("this-morning").await.unwrap();
    assert_eq!(kept.headers()["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_claim_left_without_an_answer_is_taken_over_once_its_call_cannot_be_running() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let submit = |kind: &'static str| {
        app.request(Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", "crashed")
            .json(&json!({ "kind": kind }))
            .send()
    };
    let first: Value = submit("render").await.unwrap().json().await.unwrap();
    // What a server that died during the call leaves behind: the claim, without an answer,
    // made `seconds` ago.
    let unanswered = |seconds: i32| {
        sqlx::query(
            "UPDATE idempotency_keys SET status = NULL, content_type = NULL, location = NULL, \
                    body = NULL, created_at = now() - make_interval(secs => $1) \
              WHERE key = 'crashed'",
        )
        .bind(seconds)
        .execute(&app.pool)
    };

    // Within the request timeout (30 s) and a minute more, the call may still be running.
    unanswered(80).await.unwrap();
    let running = submit("render").await.unwrap();
    assert_eq!(running.status(), StatusCode::CONFLICT);
    assert_eq!(problem(running).await["code"], "IDEMPOTENCY_KEY_IN_USE");

    // After that it cannot be: the same request takes the key over and runs; another request
    // does not.
    unanswered(100).await.unwrap();
    let other = submit("transcode").await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let again = submit("render").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert!(again.headers().get("idempotent-replayed").is_none());
    let again: Value = again.json().await.unwrap();
    assert_ne!(
        again["id"], first["id"],
        "the abandoned call's key ran anew"
    );

    // Its answer is kept like any other.
    let replay = submit("render").await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], again["id"]);
}
