//! What the deliveries list and a replay take: a filter no delivery can match (an unknown status
//! or event type, a time range backwards or outside the years 0001–9999) and a replay of types
//! the endpoint never receives are refused with 400 naming the field, and a refused replay
//! records nothing; the filters a delivery can match still narrow the list.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestApp};
use crate::webhooks::endpoint;

#[tokio::test]
async fn delivery_filters_and_replay_types_that_can_match_nothing_are_refused() {
    let app = TestApp::spawn().await;
    let (project, key) = app
        .project_with_key(&["jobs:write", "webhooks:read", "webhooks:write"])
        .await;
    let (id, _) = endpoint(&app, project, "https://example.com/hook", &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    app.wait_for_projections().await;

    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    for (query, field) in [
        ("status=bogus", "status"),
        ("event_type=nope", "event_type"),
        ("event_type=webhook.ping", "event_type"),
        ("from=2026-12-09T00:00:00Z&to=2026-12-08T00:00:00Z", "from"),
        ("from=0000-01-01T00:00:00Z", "from"),
    ] {
        let refused = app.get(&format!("{deliveries}?{query}"), &key).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        let refused = problem(refused).await;
        assert_eq!(refused["errors"][0]["field"], field, "{query}: {refused}");
    }
    for (query, count) in [
        ("status=pending&event_type=job.queued", 1),
        ("status=failed", 0),
        ("event_type=job.succeeded", 0),
    ] {
        let listed = app.get(&format!("{deliveries}?{query}"), &key).await;
        assert_eq!(listed.status(), StatusCode::OK, "{query}");
        let listed: Value = listed.json().await.unwrap();
        assert_eq!(listed["data"].as_array().unwrap().len(), count, "{query}");
        for pending in listed["data"].as_array().unwrap() {
            assert!(pending["next_attempt_at"].is_string(), "{pending}");
        }
    }

    let replays = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_replays")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let replay = format!("/api/v1/webhooks/{id}/replay");
    for body in [
        json!({"from_position": 0, "event_types": ["nope"]}),
        json!({"from_position": 0, "event_types": ["job.succeeded"]}),
        json!({"from_position": 0, "event_types": ["user.created"]}),
        json!({"from_position": 0, "event_types": ["webhook.ping"]}),
        json!({"from_position": 0, "event_types": []}),
        json!({"since": "0000-01-01T00:00:00Z"}),
    ] {
        let refused = app.post(&replay, &key, body.clone()).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{body}");
        let refused = problem(refused).await;
        assert_eq!(refused["code"], "VALIDATION_FAILED", "{body}");
    }
    assert_eq!(replays().await, 0, "a refused replay was recorded");
    let accepted = app
        .post(
            &replay,
            &key,
            json!({"from_position": 0, "event_types": ["job.queued"]}),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    assert_eq!(replays().await, 1);
}
