//! Rate limits over HTTP: the headers on every authenticated response, 429 with the violated
//! policies and a consistent `Retry-After` (after which the caller gets through again),
//! independent read and write budgets, the daily quota
//! (and that it survives a restart), per-key overrides (set only by admins, merged), and that
//! a rotated key goes on spending the budgets of the key it replaced. The
//! per-IP budget is in `ip_limits`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{key_id, problem, test_config, TestApp};

pub(crate) fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} header"))
}

pub(crate) fn number(response: &reqwest::Response, name: &str) -> i64 {
    header(response, name).parse().unwrap()
}

async fn limited(read: u32, write: u32, daily: u32) -> TestApp {
    TestApp::spawn_with(|c| {
        c.rate_limits.read_per_minute = read;
        c.rate_limits.write_per_minute = write;
        c.rate_limits.daily_quota = daily;
    })
    .await
}

#[tokio::test]
async fn writes_are_limited_per_minute_with_headers_and_a_consistent_retry_after() {
    let app = limited(100, 3, 10_000).await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let started = std::time::Instant::now();
    for remaining in [2, 1, 0] {
        let response = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(number(&response, "x-ratelimit-limit"), 3);
        assert_eq!(number(&response, "x-ratelimit-remaining"), remaining);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            r#""read";q=100;w=60, "write";q=3;w=60, "daily";q=10000;w=86400"#
        );
        assert!(header(&response, "ratelimit").starts_with(&format!(r#""write";r={remaining};t="#)));
    }
    let before = crate::support::event_count(&app.pool).await;
    let refused = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = number(&refused, "retry-after");
    let reset = number(&refused, "x-ratelimit-reset");
    let now = chrono::Utc::now().timestamp();
    // One write frees every 20 s, counted from the first: what is left of those 20 s, rounded
    // up (a slow machine may have spent a few of them on the four requests).
    let spent = started.elapsed().as_secs_f64().ceil() as i64;
    assert!(
        (20 - spent..=20).contains(&retry_after),
        "one write frees every 20 s: {retry_after} after {spent} s"
    );
    assert!(
        (reset - now - retry_after).abs() <= 1,
        "reset {reset} vs retry-after {retry_after}"
    );
    assert_eq!(number(&refused, "x-ratelimit-remaining"), 0);
    let body = problem(refused).await;
    assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(body["violated-policies"], json!(["write"]));
    assert_eq!(
        crate::support::event_count(&app.pool).await,
        before,
        "a refused request appended"
    );
    // Reads have their own budget.
    let read = app.get("/api/v1/jobs", &key).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(number(&read, "x-ratelimit-limit"), 100);
    assert_eq!(number(&read, "x-ratelimit-remaining"), 99);
}

#[tokio::test]
async fn a_refused_caller_gets_through_once_retry_after_has_passed_and_no_sooner_again() {
    let app = limited(6, 100, 10_000).await; // one read frees every 10 s
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let mut refused = None;
    for _ in 0..12 {
        let response = app.get("/api/v1/jobs", &key).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the read budget ran out");
    let retry_after = number(&refused, "retry-after");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    tokio::time::sleep(std::time::Duration::from_secs(retry_after as u64)).await;
    let again = app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "still refused after Retry-After"
    );
    assert_eq!(number(&again, "x-ratelimit-remaining"), 0);
    // One request was freed, not a new burst.
    assert_eq!(
        app.get("/api/v1/jobs", &key).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_daily_quota_counts_every_request_and_survives_a_restart() {
    let app = limited(100, 100, 5).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    let config = {
        let mut config = test_config(&app.database_url);
        config.rate_limits = app.state.config.rate_limits.clone();
        config
    };
    app.stop().await; // flushes the day's counts
    let again = TestApp::start(config).await;
    let fourth = again.get("/api/v1/jobs", &key).await;
    assert_eq!(fourth.status(), StatusCode::OK);
    assert_eq!(
        number(&fourth, "x-ratelimit-remaining"),
        1,
        "the daily quota forgot the first server's requests"
    );
    assert_eq!(
        again.get("/api/v1/jobs", &key).await.status(),
        StatusCode::OK
    );
    let refused = again.get("/api/v1/jobs", &key).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let until_midnight = number(&refused, "retry-after");
    assert!((1..=86_400).contains(&until_midnight));
    assert_eq!(
        problem(refused).await["violated-policies"],
        json!(["daily"])
    );
}

#[tokio::test]
async fn a_keys_own_limits_replace_the_defaults() {
    let app = limited(100, 100, 10_000).await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    let id = key.split('_').nth(2).unwrap();
    let patched = app
        .request(
            Method::PATCH,
            &format!("/api/v1/api-keys/{id}"),
            &app.admin_key,
        )
        .json(&json!({"rate_limit": {"read_per_minute": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let first = app.get("/api/v1/jobs", &key).await;
    assert_eq!(number(&first, "x-ratelimit-limit"), 2);
    app.get("/api/v1/jobs", &key).await;
    assert_eq!(
        app.get("/api/v1/jobs", &key).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

pub(crate) async fn patch_limits(
    app: &TestApp,
    id: &str,
    by: &str,
    limits: Value,
) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/api/v1/api-keys/{id}"), by)
        .json(&json!({ "rate_limit": limits }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_admins_set_limits_and_a_change_keeps_the_limits_it_does_not_name() {
    let app = limited(100, 100, 10_000).await;
    let (project, key) = app.project_with_key(&["jobs:read", "keys:write"]).await;
    let id = key.split('_').nth(2).unwrap();
    let own = patch_limits(&app, id, &key, json!({"read_per_minute": 1_000_000})).await;
    assert_eq!(own.status(), StatusCode::FORBIDDEN);
    assert_eq!(problem(own).await["code"], "FORBIDDEN");
    let created = app
        .request(Method::POST, "/api/v1/api-keys", &key)
        .json(
            &json!({"name": "greedy", "project_id": project, "scopes": ["jobs:read"],
                      "rate_limit": {"daily_quota": 4_000_000_000u32}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::FORBIDDEN);
    let by_admin: Value = app
        .post(
            "/api/v1/api-keys",
            &app.admin_key,
            json!({"name": "batch", "project_id": project, "scopes": ["jobs:read"],
                   "rate_limit": {"daily_quota": 50_000}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_admin["rate_limit"]["daily_quota"], 50_000);
    let history: Value = app
        .get(&format!("/api/v1/api-keys/{id}/history"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["data"].as_array().unwrap().len(), 1, "{history}");
    // `null`, as for every field of the body, is the field left out: no change to the limits,
    // so not refused.
    let renamed = app
        .request(Method::PATCH, &format!("/api/v1/api-keys/{id}"), &key)
        .json(&json!({"name": "renamed", "rate_limit": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = renamed.json().await.unwrap();
    assert_eq!(renamed["name"], "renamed");
    let defaults = json!({"read_per_minute": null, "write_per_minute": null, "daily_quota": null});
    assert_eq!(renamed["rate_limit"], defaults);

    let admin = &app.admin_key;
    let set = patch_limits(
        &app,
        id,
        admin,
        json!({"read_per_minute": 7, "daily_quota": 50}),
    )
    .await;
    assert_eq!(set.status(), StatusCode::OK);
    let merged: Value = patch_limits(
        &app,
        id,
        admin,
        json!({"write_per_minute": 3, "daily_quota": null}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        merged["rate_limit"],
        json!({"read_per_minute": 7, "write_per_minute": 3, "daily_quota": null})
    );
    let zero = patch_limits(&app, id, admin, json!({"write_per_minute": 0})).await;
    assert_eq!(zero.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        problem(zero).await["errors"][0]["field"],
        "rate_limit.write_per_minute"
    );
    assert_eq!(
        number(&app.get("/api/v1/jobs", &key).await, "x-ratelimit-limit"),
        7
    );
    // An admin's `null` too leaves them as they are, and a change of nothing records nothing.
    let recorded = history_len(&app, id).await;
    let kept: Value = patch_limits(&app, id, admin, Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kept["rate_limit"]["read_per_minute"], 7);
    // Limits given as an array (which serde alone would read field by field) are refused.
    for listed in [json!([1, 2]), json!([null, null, null]), json!([])] {
        let refused = patch_limits(&app, id, admin, listed).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert_eq!(problem(refused).await["errors"][0]["field"], "rate_limit");
    }
    for same in [
        json!({}),
        json!({"read_per_minute": 7, "daily_quota": null}),
    ] {
        let kept = patch_limits(&app, id, admin, same).await;
        assert_eq!(kept.status(), StatusCode::OK);
    }
    let renamed_again = app
        .request(Method::PATCH, &format!("/api/v1/api-keys/{id}"), admin)
        .json(&json!({"name": "renamed", "scopes": ["jobs:read", "keys:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed_again.status(), StatusCode::OK);
    assert_eq!(
        history_len(&app, id).await,
        recorded,
        "no-op updates recorded"
    );
}

/// `key` rotates itself with an hour's grace: the successor as created (`id`, `key`, ...).
async fn rotate(app: &TestApp, key: &str) -> Value {
    let rotated = app
        .post(
            &format!("/api/v1/api-keys/{}/rotate", key_id(key)),
            key,
            json!({"grace_period_seconds": 3600}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    rotated.json().await.unwrap()
}

#[tokio::test]
async fn keys_of_one_rotation_with_different_limits_cannot_free_each_others_budget() {
    let app = limited(30, 100, 10_000).await;
    let (_, first) = app
        .project_with_key(&["jobs:read", "keys:read", "keys:write"])
        .await;
    let second = rotate(&app, &first).await;
    let limits = json!({"read_per_minute": 3});
    let patched = patch_limits(&app, second["id"].as_str().unwrap(), &app.admin_key, limits).await;
    assert_eq!(patched.status(), StatusCode::OK);
    let second = second["key"].as_str().unwrap();

    // The first key spends the shared budget at its 30 a minute; the successor, at 3 a
    // minute, is refused; and that refusal gives the first key nothing back.
    let mut allowed = 0;
    while app.get("/api/v1/jobs", &first).await.status() == StatusCode::OK {
        allowed += 1;
    }
    assert!((30..=31).contains(&allowed), "{allowed}");
    for _ in 0..3 {
        let refused = app.get("/api/v1/jobs", second).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            number(&refused, "retry-after") >= 40,
            "the first key's spending is owed"
        );
        let again = app.get("/api/v1/jobs", &first).await;
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let url = format!("/api/v1/api-keys/{id}/history");
    let history: Value = app.get(&url, &app.admin_key).await.json().await.unwrap();
    history["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn rotation_never_starts_fresh_budgets() {
    let app = limited(100, 100, 6).await;
    let (_, first) = app
        .project_with_key(&["jobs:read", "keys:read", "keys:write"])
        .await;
    // A key rotates itself, then its successor does: all three spend the first key's budgets.
    let rotate = |key: String| {
        let app = &app;
        async move {
            let body = rotate(app, &key).await;
            body["key"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        app.get("/api/v1/jobs", &first).await.status(),
        StatusCode::OK
    );
    let second = rotate(first.clone()).await;
    let third = rotate(second.clone()).await;
    let mut used = 3;
    for key in [&third, &first, &second] {
        let response = app.get("/api/v1/jobs", key).await;
        assert_eq!(response.status(), StatusCode::OK);
        used += 1;
        assert_eq!(
            number(&response, "x-ratelimit-remaining"),
            6 - used,
            "the day's requests of every key in the rotation count"
        );
    }
    let refused = app.get("/api/v1/jobs", &third).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        problem(refused).await["violated-policies"],
        json!(["daily"])
    );
    let now = chrono::Utc::now();
    let report: Value = app
        .get(
            &format!(
                "/api/v1/usage?key_id={}&from={}&to={}",
                key_id(&third),
                (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:00:00Z"),
                (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:00:00Z"),
            ),
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["quotas"][0]["used_today"], 6, "{report}");
}
