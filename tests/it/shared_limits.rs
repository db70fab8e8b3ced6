//! Rate limits shared through a real Redis (started by `scripts/test-redis.sh`): two `herald
//! serve` processes on one database and one Redis together allow exactly one key's limit, per
//! minute and per day; a day's count Redis lost starts again from every replica's stored
//! share; a budget's state in Redis expires once it lies in the past, whatever the window;
//! with Redis unreachable a replica keeps serving and limits on its own, and says so.

use std::time::Duration;

use futures::future::join_all;
use herald_api::config::Secret;
use herald_api::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{herald_serve, TestApp};

pub(crate) fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").expect(
        "TEST_REDIS_URL is not set: run the tests with ./scripts/test, which starts a Redis for them",
    )
}

pub(crate) fn shared(config: &mut Config, redis: &str) {
    config.redis_url = Secret::new(redis);
    config.rate_limits.write_per_minute = 10;
    config.rate_limits.read_per_minute = 1_000_000;
    config.rate_limits.daily_quota = 25;
}

/// Waits until the process at `base` reports its limits shared through Redis.
pub(crate) async fn until_shared(base: &str) {
    for _ in 0..100 {
        let health: Value = reqwest::get(format!("{base}/health/detailed"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["rate_limits"] == "shared" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{base} never shared its limits through Redis");
}

#[tokio::test]
async fn two_herald_processes_together_allow_one_limit() {
    let redis = redis_url();
    // This in-process app only creates the database, the project and the key.
    let setup = TestApp::spawn().await;
    let (_, key) = setup.project_with_key(&["jobs:read", "jobs:write"]).await;
    let env = [
        ("REDIS_URL", redis.as_str()),
        ("HERALD_RATE_LIMITS__WRITE_PER_MINUTE", "5"),
        ("HERALD_RATE_LIMITS__READ_PER_MINUTE", "1000000"),
        ("HERALD_RATE_LIMITS__DAILY_QUOTA", "25"),
    ];
    let (_first, first) = herald_serve(&setup.database_url, &env).await;
    let (_second, second) = herald_serve(&setup.database_url, &env).await;
    until_shared(&first).await;
    until_shared(&second).await;
    let client = crate::support::http_client();
    let submit = |base: &str| {
        client
            .post(format!("{base}/api/v1/jobs"))
            .header("X-API-Key", &key)
            .json(&json!({"kind": "render"}))
            .send()
    };

    // Fifteen submissions at once, alternating processes: five pass, whichever took them (one
    // slot frees every 12 s, far longer than the burst takes).
    let attempts = (0..15).map(|i| submit(if i % 2 == 0 { &first } else { &second }));
    let statuses: Vec<StatusCode> = join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.unwrap().status())
        .collect();
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((accepted, refused), (5, 10), "{statuses:?}");
    let refusal = submit(&second).await.unwrap();
    assert_eq!(refusal.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refusal.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=12).contains(&retry),
        "one slot frees every 12 s: {retry}"
    );
    let body: Value = refusal.json().await.unwrap();
    assert_eq!(body["violated-policies"], json!(["write"]));

    // The day is shared too: 25 in all, 5 spent above (refusals count nothing).
    let mut passed = 0;
    for i in 0..26 {
        let base = if i % 2 == 0 { &first } else { &second };
        let response = client
            .get(format!("{base}/api/v1/jobs"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["violated-policies"], json!(["daily"]));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(passed, 25 - 5, "reads until the shared day is used up");

    // Three writers appended to one request log meanwhile; its chain is whole.
    let check: Value = setup
        .get("/api/v1/audit/verify", &setup.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert!(check["checked"].as_i64().unwrap() >= 42, "{check}");
}

/// A key of a fresh app sharing its limits through Redis makes 2 reads here (stored), another
/// replica has stored 10 of its own, and then Redis loses the day's count. Returns the key and
/// the Redis key of its day's count.
pub(crate) async fn a_day_redis_lost(app: &TestApp, redis: &str) -> (String, String) {
    until_shared(&app.base_url).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    app.state.rate_limiter.flush(&app.pool).await.unwrap();
    let id = key.split('_').nth(2).unwrap();
    let subject = format!("key:{id}");
    let today = chrono::Utc::now().date_naive();
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) VALUES ($1, $2, 'another', 10)",
    )
    .bind(&subject)
    .bind(today)
    .execute(&app.pool)
    .await
    .unwrap();
    let day_key = format!("herald:rl:{subject}:daily:{today}");
    let lost: i64 = redis::cmd("DEL")
        .arg(&day_key)
        .query_async(&mut redis_connection(redis).await)
        .await
        .unwrap();
    assert_eq!(lost, 1, "the day's counter was in Redis");
    (key, day_key)
}

pub(crate) async fn redis_connection(redis: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test]
async fn a_daily_count_redis_lost_starts_again_from_every_replicas_stored_share() {
    let redis = redis_url();
    let app = TestApp::spawn_with(|c| shared(c, &redis)).await;
    let (key, _) = a_day_redis_lost(&app, &redis).await;
    let next = app.get("/api/v1/jobs", &key).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(
        next.headers()["x-ratelimit-remaining"],
        (25 - 13).to_string().as_str(),
        "2 here and 10 elsewhere were used before this one"
    );
}

#[tokio::test]
async fn a_quota_that_does_not_divide_a_minute_allows_exactly_the_quota_through_redis() {
    let redis = redis_url();
    let app = TestApp::spawn_with(|c| {
        shared(c, &redis);
        c.rate_limits.write_per_minute = 7;
    })
    .await;
    until_shared(&app.base_url).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let mut accepted = 0;
    for _ in 0..9 {
        let response = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
        accepted += usize::from(response.status() == StatusCode::ACCEPTED);
    }
    assert_eq!(accepted, 7);
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

#[tokio::test]
async fn a_budgets_state_in_redis_lives_as_long_as_it_matters_and_no_longer() {
    let redis = redis_url();
    let app = TestApp::spawn_with(|c| {
        shared(c, &redis);
        c.rate_limits.write_per_minute = 2;
    })
    .await;
    until_shared(&app.base_url).await;
    let (_, key) = app.project_with_key(&["jobs:write"]).await;
    let sent = std::time::Instant::now();
    let response = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Two a minute: the budget is full again 30 s after one request, and its state goes then
    // (a second later), whatever the quota; a fixed lifetime would cut short a window longer
    // than itself.
    let id = key.split('_').nth(2).unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("herald:rl:key:{id}:write"))
        .query_async(&mut redis_connection(&redis).await)
        .await
        .unwrap();
    // 31 s when the script ran, less what has passed since (at most the time since sending).
    let since = sent.elapsed().as_millis() as i64;
    assert!(
        (31_000 - since..=31_000).contains(&ttl),
        "{ttl} ms, {since} ms after sending"
    );
}
