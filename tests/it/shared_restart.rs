//! A day's count Redis lost while a replica was cut off from it: another replica starts the
//! count again from every replica's stored share, and the cut-off replica, when Redis answers
//! again, adds only what its own stored share did not already bring in. Its requests are
//! counted once, not twice.

use herald_api::Config;
use reqwest::StatusCode;

use crate::shared_limits::{redis_connection, redis_url, shared, until_shared};
use crate::shared_outage::{behind_relay, until_state};
use crate::support::{test_config, TestApp};

#[tokio::test]
async fn requests_allowed_alone_are_counted_once_when_another_replica_restarts_the_day() {
    let (relay, cut_off) = behind_relay().await;
    let other = {
        let mut config: Config = test_config(&cut_off.database_url);
        shared(&mut config, &redis_url());
        TestApp::start(config).await
    };
    until_shared(&other.base_url).await;
    let (_, key) = cut_off.project_with_key(&["jobs:read"]).await;
    let remaining = |response: reqwest::Response| {
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    for _ in 0..2 {
        remaining(cut_off.get("/api/v1/jobs", &key).await);
    }

    // Cut off, the replica allows three on its own and stores its count (five) as it does
    // every two seconds; meanwhile Redis loses the day.
    relay.set_cut(true);
    until_state(&cut_off, "shared_unavailable_using_local").await;
    for _ in 0..3 {
        remaining(cut_off.get("/api/v1/jobs", &key).await);
    }
    cut_off
        .state
        .rate_limiter
        .flush(&cut_off.pool)
        .await
        .unwrap();
    let id = key.split('_').nth(2).unwrap();
    let day_key = format!(
        "herald:rl:key:{id}:daily:{}",
        chrono::Utc::now().date_naive()
    );
    let lost: i64 = redis::cmd("DEL")
        .arg(&day_key)
        .query_async(&mut redis_connection(&redis_url()).await)
        .await
        .unwrap();
    assert_eq!(lost, 1, "the day's counter was in Redis");

    // The other replica starts the day again from the stored shares: five, and its own one.
    let restarted = other.get("/api/v1/jobs", &key).await;
    assert_eq!(remaining(restarted), (25 - 6).to_string());

    relay.set_cut(false);
    until_state(&cut_off, "shared").await;
    let next = cut_off.get("/api/v1/jobs", &key).await;
    assert_eq!(
        remaining(next),
        (25 - 7).to_string(),
        "the three allowed alone were in the stored share the day started from"
    );
}
