//! A key's per-minute limit changed by an admin applies from the key's next request, and what
//! the key used this minute counts against the new limit: raised, the difference is there at
//! once; lowered, no more than the new limit passes, and the key waits until what it spent
//! fits the new limit (never longer than the minute its spending takes to come back). In one
//! replica's memory and through Redis.

use reqwest::StatusCode;
use serde_json::json;

use crate::rate_limits::{number, patch_limits};
use crate::shared_limits::{redis_connection, redis_url, until_shared};
use crate::support::TestApp;

async fn set_read_limit(app: &TestApp, id: &str, per_minute: u32) {
    let limit = json!({"read_per_minute": per_minute});
    let patched = patch_limits(app, id, &app.admin_key, limit).await;
    assert_eq!(patched.status(), StatusCode::OK);
}

/// Three reads a minute, all used; raised to six (one every 10 s), then lowered to four (one
/// every 15 s). Each step takes far less than the 10 s a read takes to come back.
/// Returns the key's id.
async fn a_changed_limit_counts_what_was_used(app: &TestApp) -> String {
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let id = key.split('_').nth(2).unwrap();
    set_read_limit(app, id, 3).await;
    for remaining in [2, 1, 0] {
        let read = app.get("/api/v1/jobs", &key).await;
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(number(&read, "x-ratelimit-remaining"), remaining);
    }
    let refused = app.get("/api/v1/jobs", &key).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    set_read_limit(app, id, 6).await;
    let raised = app.get("/api/v1/jobs", &key).await;
    assert_eq!(raised.status(), StatusCode::OK, "three of six were used");
    assert_eq!(number(&raised, "x-ratelimit-limit"), 6);
    assert_eq!(number(&raised, "x-ratelimit-remaining"), 2);

    set_read_limit(app, id, 4).await;
    let lowered = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        lowered.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "four of four were used"
    );
    assert_eq!(number(&lowered, "x-ratelimit-limit"), 4);

    // Lowered to one a minute: four reads' worth is owed, more than a window of the new limit;
    // the key waits until the minute its four reads take to come back is over.
    set_read_limit(app, id, 1).await;
    let cut = app.get("/api/v1/jobs", &key).await;
    assert_eq!(cut.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = number(&cut, "retry-after");
    assert!((55..=60).contains(&retry_after), "{retry_after}");

    // The refusal under one a minute forgot nothing: raised to 100, the key still owes its
    // four reads (95 left after this one; 96 if more than 15 s passed). Had the refusal kept
    // the one read a window of one a minute holds, 98 would be left: two keys of a rotation
    // with different limits could free each other's budget that way.
    set_read_limit(app, id, 100).await;
    let again = app.get("/api/v1/jobs", &key).await;
    assert_eq!(again.status(), StatusCode::OK);
    let remaining = number(&again, "x-ratelimit-remaining");
    assert!((95..=96).contains(&remaining), "{remaining}");
    id.to_owned()
}

/// 40 of 60 reads a minute used (40 s to come back, one a second), then lowered to 30 a
/// minute (one every 2 s): that is more than the minute the new limit lets be owed, so the key
/// waits until no more than 29 s of it is left, 11 s after the burst, and the refusal says so;
/// then a read passes.
async fn a_refusal_under_a_lowered_limit_says_how_long_it_is(app: &TestApp) {
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let id = key.split('_').nth(2).unwrap();
    set_read_limit(app, id, 60).await;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    set_read_limit(app, id, 30).await;
    let refused = app.get("/api/v1/jobs", &key).await;
    let spent = started.elapsed().as_secs_f64();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = number(&refused, "retry-after");
    assert!(
        (11.0 - spent..=11.0).contains(&(retry_after as f64)),
        "{retry_after} s announced, {spent} s after the burst began"
    );
    tokio::time::sleep(std::time::Duration::from_secs(retry_after as u64)).await;
    let later = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        later.status(),
        StatusCode::OK,
        "Retry-After was the wait there was"
    );
}

#[tokio::test]
async fn a_changed_limit_applies_at_once_in_one_replica() {
    let app = TestApp::spawn().await;
    a_changed_limit_counts_what_was_used(&app).await;
    a_refusal_under_a_lowered_limit_says_how_long_it_is(&app).await;
}

#[tokio::test]
async fn a_changed_limit_applies_at_once_through_redis() {
    let redis = redis_url();
    let app = TestApp::spawn_with(|c| c.redis_url = herald_api::config::Secret::new(&redis)).await;
    until_shared(&app.base_url).await;
    a_refusal_under_a_lowered_limit_says_how_long_it_is(&app).await;
    let id = a_changed_limit_counts_what_was_used(&app).await;
    // Redis decided: it keeps the quota of the last TAT it wrote, with that TAT.
    let mut redis = redis_connection(&redis).await;
    let get = |key: String| redis::cmd("GET").arg(key).clone();
    let kept: String = get(format!("herald:rl:key:{id}:read:quota"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let tat: String = get(format!("herald:rl:key:{id}:read"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(kept, format!("100:{tat}"));
}
