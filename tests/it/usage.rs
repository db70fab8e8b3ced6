//! `GET /usage`, `GET /admin/stats` and `GET /admin/security` over real traffic: usage totals
//! equal the request log's counts for the same caller and range, broken down by route group and
//! status class, with jobs submitted and the daily quota; the admin summaries count jobs (and
//! how the finished ones went), keys and refusals.

use chrono::{DurationRound, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{key_id, TestApp};

/// The JSON of a 200 answer to `GET path` with `key`.
pub(crate) async fn json_of(app: &TestApp, path: &str, key: &str) -> Value {
    let response = app.get(path, key).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// Every request-log record of `key` in the range, through the audit API.
async fn audit_statuses(app: &TestApp, key: &str, from: &str, to: &str) -> Vec<i64> {
    let mut statuses = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!(
            "/api/v1/audit/requests?key_id={}&from={from}&to={to}&limit=100{cursor}",
            key_id(key)
        );
        let page = json_of(app, &path, &app.admin_key).await;
        for record in page["data"].as_array().unwrap() {
            statuses.push(record["status"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return statuses,
        }
    }
}

#[tokio::test]
async fn usage_matches_the_request_log_and_admin_summaries_count_what_happened() {
    let app = TestApp::spawn().await;
    let from = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap();
    let (project, key) = app
        .project_with_key(&["jobs:read", "jobs:write", "usage:read"])
        .await;
    let (_, other_key) = app.project_with_key(&["jobs:write"]).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(app.submit_job(&key, json!({"kind": "render"})).await);
    }
    for job in &jobs[..2] {
        app.get(&format!("/api/v1/jobs/{job}"), &key).await;
    }
    let missing = app
        .get(&format!("/api/v1/jobs/{}", uuid::Uuid::now_v7()), &key)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let forbidden = app.get("/api/v1/admin/stats", &key).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    app.submit_job(&other_key, json!({"kind": "render"})).await;
    for _ in 0..2 {
        let refused = app
            .get("/api/v1/jobs", "hrld_live_AAAAAAAAAAAAAAAA_nope")
            .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let to = Utc::now() + chrono::Duration::hours(1);
    let (from_q, to_q) = (
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );

    // The key's usage: seven requests, all `jobs` but the refused admin call.
    let report = json_of(
        &app,
        &format!(
            "/api/v1/usage?key_id={}&from={from_q}&to={to_q}&granularity=day",
            key_id(&key)
        ),
        &app.admin_key,
    )
    .await;
    let buckets = report["data"].as_array().unwrap();
    let total: i64 = buckets
        .iter()
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    let submitted: i64 = buckets
        .iter()
        .map(|b| b["jobs_submitted"].as_i64().unwrap())
        .sum();
    let class = |name: &str| -> i64 {
        buckets
            .iter()
            .map(|b| b["by_status_class"][name].as_i64().unwrap_or(0))
            .sum()
    };
    let statuses = audit_statuses(&app, &key, &from_q, &to_q).await;
    assert_eq!(total, 7);
    assert_eq!(total, statuses.len() as i64, "usage equals the audit count");
    assert_eq!(
        class("2xx"),
        statuses.iter().filter(|s| **s < 300).count() as i64
    );
    assert_eq!(class("4xx"), 2);
    assert_eq!(submitted, 3);
    assert_eq!(buckets[0]["by_route_group"]["jobs"], 6);
    assert_eq!(buckets[0]["by_route_group"]["admin"], 1);
    assert_eq!(buckets[0]["project_id"], project.to_string().as_str());
    let quota = &report["quotas"][0];
    assert_eq!(quota["key_id"], key_id(&key));
    assert_eq!(quota["used_today"], 7);
    assert_eq!(
        quota["remaining_today"].as_u64().unwrap(),
        quota["daily_quota"].as_u64().unwrap() - 7
    );
    // Another replica has stored 10 requests of this key today: the quota counts them too.
    app.state.rate_limiter.flush(&app.pool).await.unwrap();
    sqlx::query(
        "INSERT INTO rate_limit_daily (subject, day, replica, used) VALUES ($1, $2, 'another', 10)",
    )
    .bind(format!("key:{}", key_id(&key)))
    .bind(Utc::now().date_naive())
    .execute(&app.pool)
    .await
    .unwrap();
    let again = json_of(
        &app,
        &format!("/api/v1/usage?key_id={}", key_id(&key)),
        &app.admin_key,
    )
    .await;
    assert_eq!(again["quotas"][0]["used_today"], 17);

    // A project key sees only its own project's usage.
    let own = json_of(&app, "/api/v1/usage", &key).await;
    for bucket in own["data"].as_array().unwrap() {
        assert_eq!(
            bucket["project_id"],
            project.to_string().as_str(),
            "{bucket}"
        );
    }
    let bad = app.get("/api/v1/usage?granularity=minute", &key).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Admin summaries.
    app.wait_for_projections().await;
    let stats = json_of(&app, "/api/v1/admin/stats", &app.admin_key).await;
    assert_eq!(stats["jobs_by_status"]["queued"], 4, "{stats}");
    assert_eq!(stats["active_keys"], 3, "{stats}");
    let created: i64 = stats["jobs_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["jobs"].as_i64().unwrap())
        .sum();
    assert_eq!(created, 4);
    let security = json_of(&app, "/api/v1/admin/security", &app.admin_key).await;
    assert_eq!(security["failed_authentications_24h"], 2, "{security}");
    assert_eq!(security["forbidden_24h"], 1, "{security}");
    assert_eq!(security["top_refused_ips"][0]["ip"], "127.0.0.1");
    assert_eq!(security["top_refused_ips"][0]["refusals"], 3);
    assert!(security["audit_records_24h"].as_i64().unwrap() >= 14);
}

#[tokio::test]
async fn usage_filters_by_a_user_id_in_any_form_and_refuses_ids_that_name_no_caller() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user("usage@example.com", crate::support::PASSWORD, false)
        .await;
    let login = app
        .login("usage@example.com", crate::support::PASSWORD)
        .await;
    let token = login["access_token"].as_str().unwrap();
    let me = app
        .as_user(reqwest::Method::GET, "/api/v1/projects", token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let upper = user.simple().to_string().to_uppercase();
    let report = json_of(
        &app,
        &format!("/api/v1/usage?key_id={upper}"),
        &app.admin_key,
    )
    .await;
    let entries = report["data"].as_array().unwrap();
    assert!(!entries.is_empty(), "{report}");
    for entry in entries {
        assert_eq!(entry["actor_id"], user.to_string().as_str(), "{entry}");
    }
    for id in ["nope", "", "hrld_live_x"] {
        let bad = app
            .get(&format!("/api/v1/usage?key_id={id}"), &app.admin_key)
            .await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{id:?}");
        assert_eq!(
            crate::support::problem(bad).await["errors"][0]["field"],
            "key_id"
        );
    }
}

#[tokio::test]
async fn usage_reports_the_whole_hours_it_counted_and_they_match_the_log() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read", "usage:read"]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    let hour = chrono::Duration::hours(1);
    let now = Utc::now();
    let asked_from = now - chrono::Duration::minutes(90) - chrono::Duration::seconds(7);
    let asked_to = now + chrono::Duration::seconds(1);
    let format = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = format!(
        "/api/v1/usage?key_id={}&from={}&to={}",
        key_id(&key),
        format(asked_from),
        format(asked_to)
    );
    let report = json_of(&app, &path, &key).await;
    let from: chrono::DateTime<Utc> = report["from"].as_str().unwrap().parse().unwrap();
    let to: chrono::DateTime<Utc> = report["to"].as_str().unwrap().parse().unwrap();
    assert_eq!(from, asked_from.duration_trunc(hour).unwrap());
    assert_eq!(to, asked_to.duration_trunc(hour).unwrap() + hour);
    let total: i64 = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_i64().unwrap())
        .sum();
    // The report's own request is logged after it was counted.
    let logged = audit_statuses(&app, &key, &format(from), &format(to)).await;
    assert_eq!(total, 3);
    assert_eq!(logged.len(), 4, "{logged:?}");
}

#[tokio::test]
async fn an_idempotent_replay_is_usage_but_not_another_submission() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:write", "usage:read"]).await;
    for _ in 0..2 {
        let submitted = app
            .request(reqwest::Method::POST, "/api/v1/jobs", &key)
            .header("Idempotency-Key", "one-submission")
            .json(&json!({"kind": "render"}))
            .send()
            .await
            .unwrap();
        assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    }
    let report = json_of(
        &app,
        &format!("/api/v1/usage?key_id={}", key_id(&key)),
        &key,
    )
    .await;
    let bucket = &report["data"][0];
    assert_eq!(bucket["requests"], 2);
    assert_eq!(bucket["jobs_submitted"], 1);
    assert_eq!(bucket["by_status_class"], json!({"2xx": 1, "replayed": 1}));
    let replays = json_of(
        &app,
        &format!(
            "/api/v1/audit/requests?outcome=replayed&key_id={}",
            key_id(&key)
        ),
        &app.admin_key,
    )
    .await;
    assert_eq!(replays["data"].as_array().unwrap().len(), 1);
    assert_eq!(replays["data"][0]["status"], 202);
}

#[tokio::test]
async fn admin_summaries_report_finished_jobs_and_rate_limit_refusals() {
    // Five writes a minute per key: the client's sixth submission is refused, the worker's
    // leases, completion and failure fit.
    let app = TestApp::spawn_with(|c| c.rate_limits.write_per_minute = 5).await;
    let (project, client) = app.project_with_key(&["jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    let mut submitted = Vec::new();
    for _ in 0..5 {
        submitted.push(app.submit_job(&client, json!({"kind": "render"})).await);
    }
    let refused = app
        .post("/api/v1/jobs", &client, json!({"kind": "render"}))
        .await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // Queued jobs are leasable at once (a lease that finds none would spend a write).
    app.wait_for_projections().await;
    let id = app.lease(&worker, json!({})).await.unwrap()["id"].clone();
    let done = app
        .post(
            &format!("/api/v1/jobs/{}/complete", id.as_str().unwrap()),
            &worker,
            json!({}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let id = app.lease(&worker, json!({})).await.unwrap()["id"].clone();
    let failed = app
        .post(
            &format!("/api/v1/jobs/{}/fail", id.as_str().unwrap()),
            &worker,
            json!({"error": "bad input", "retryable": false}),
        )
        .await;
    assert_eq!(failed.status(), StatusCode::OK);
    // A cancelled job finished, but it did not run to an outcome: the success rate leaves it out.
    let last = submitted.last().unwrap();
    let cancelled = app
        .post(
            &format!("/api/v1/jobs/{last}/cancel"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);

    app.wait_for_projections().await;
    let asked = chrono::Utc::now();
    let stats = json_of(&app, "/api/v1/admin/stats", &app.admin_key).await;
    assert_eq!(stats["finished_last_24h"], 3, "{stats}");
    assert_eq!(stats["succeeded_last_24h"], 1, "{stats}");
    assert_eq!(stats["failed_last_24h"], 1, "{stats}");
    assert_eq!(stats["success_rate"], 0.5, "{stats}");
    assert!(stats["average_processing_seconds"].as_f64().unwrap() >= 0.0);
    let by_status = &stats["jobs_by_status"];
    assert_eq!(
        (
            &by_status["queued"],
            &by_status["succeeded"],
            &by_status["failed"],
            &by_status["cancelled"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(1)),
        "{stats}"
    );
    // Every one of the last 24 hours, empty ones too, oldest first, ending with this one.
    let hours = stats["jobs_per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24, "{stats}");
    let hour_of = |entry: &Value| {
        entry["hour"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    for pair in hours.windows(2) {
        assert_eq!(
            hour_of(&pair[1]) - hour_of(&pair[0]),
            chrono::Duration::hours(1)
        );
    }
    let hour = chrono::Duration::hours(1);
    let (last, now) = (hour_of(&hours[23]), chrono::Utc::now());
    assert!(
        last >= asked.duration_trunc(hour).unwrap() && last <= now,
        "{stats}"
    );
    let created: i64 = hours.iter().map(|h| h["jobs"].as_i64().unwrap()).sum();
    assert_eq!(created, 5, "{stats}");
    assert!(
        hours.iter().filter(|h| h["jobs"] == 0).count() >= 22,
        "hours without jobs are listed with 0: {stats}"
    );
    let security = json_of(&app, "/api/v1/admin/security", &app.admin_key).await;
    assert_eq!(security["rate_limited_24h"], 1, "{security}");
    assert_eq!(
        security["active_keys"], 3,
        "admin, client and worker: {security}"
    );
}
