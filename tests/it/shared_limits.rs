//! Rate limits shared through a real Redis (started by `scripts/test-redis.sh`): two replicas on
//! one database and one Redis together allow exactly one key's limit, per minute and per day;
//! with Redis unreachable a replica keeps serving and limits on its own, and says so.

use std::time::Duration;

use futures::future::join_all;
use herald_api::config::Secret;
use herald_api::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{test_config, TestApp};

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").expect(
        "TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts a Redis for them",
    )
}

fn shared(config: &mut Config, redis: &str) {
    config.redis_url = Secret::new(redis);
    config.rate_limits.write_per_minute = 10;
    config.rate_limits.read_per_minute = 1_000_000;
    config.rate_limits.daily_quota = 25;
}

async fn until_shared(app: &TestApp) {
    for _ in 0..100 {
        if app.state.rate_limiter.shared_status() == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never connected to Redis");
}

#[tokio::test]
async fn two_replicas_together_allow_one_limit() {
    let redis = redis_url();
    let first = TestApp::spawn_with(|c| shared(c, &redis)).await;
    let mut config = test_config(&first.database_url);
    shared(&mut config, &redis);
    let second = TestApp::start(config).await;
    until_shared(&first).await;
    until_shared(&second).await;
    let (_, key) = first.project_with_key(&["jobs:read", "jobs:write"]).await;

    // Thirty submissions at once, alternating replicas: ten pass, whichever replica took them.
    let attempts = (0..30).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        app.post("/api/v1/jobs", &key, json!({"kind": "render"}))
    });
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (10, 20), "{statuses:?}");
    let refusal = second
        .post("/api/v1/jobs", &key, json!({"kind": "render"}))
        .await;
    assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refusal.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=6).contains(&retry),
        "one slot frees every 6 s: {retry}"
    );
    let body: Value = refusal.json().await.unwrap();
    assert_eq!(body["violated-policies"], json!(["write"]));

    // The day is shared too: 25 in all, 11 spent above (the refusals count nothing).
    let mut passed = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &first } else { &second };
        let response = app.get("/api/v1/jobs", &key).await;
        match response.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["violated-policies"], json!(["daily"]));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, 25 - 10, "reads until the shared day is used up");
    let health: Value = first
        .client
        .get(first.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["rate_limits"], "shared", "{health}");
}

#[tokio::test]
async fn without_redis_a_replica_limits_on_its_own_and_says_so() {
    // Nothing listens on port 9 of the loopback: every call to Redis fails at once.
    let app = TestApp::spawn_with(|c| {
        shared(c, "redis://127.0.0.1:9");
        c.rate_limits.write_per_minute = 2;
    })
    .await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let health: Value = app
        .client
        .get(app.url("/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["rate_limits"], "shared_unavailable_using_local");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["database"]["status"], "ok");
}
