//! What usage and the request log group calls by: one usage entry per caller, project and
//! bucket, however the caller's calls interleave across projects; the route template that
//! served a call, whatever its path held, or `unmatched` for a path no route serves; and the
//! caller of a call refused before any handler, named when its credentials are valid.

use chrono::DurationRound;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{key_id, TestApp};

/// The JSON of a 200 answer to `GET path` with the admin key.
async fn admin_json(app: &TestApp, path: &str) -> Value {
    crate::usage::json_of(app, path, &app.admin_key).await
}

#[tokio::test]
async fn a_caller_acting_in_two_projects_has_one_usage_entry_per_project() {
    let app = TestApp::spawn().await;
    let (a, key_a) = app.project_with_key(&["jobs:write"]).await;
    let (b, key_b) = app.project_with_key(&["jobs:write"]).await;
    let job_a = app.submit_job(&key_a, json!({"kind": "render"})).await;
    let job_b = app.submit_job(&key_b, json!({"kind": "render"})).await;
    // The admin key works in both projects, each route in A, then in B.
    for job in [job_a, job_b] {
        let read = app
            .get(&format!("/api/v1/jobs/{job}"), &app.admin_key)
            .await;
        assert_eq!(read.status(), StatusCode::OK);
    }
    for job in [job_a, job_b] {
        let cancel = app
            .post(
                &format!("/api/v1/jobs/{job}/cancel"),
                &app.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(cancel.status(), StatusCode::OK);
    }

    let report = admin_json(
        &app,
        &format!(
            "/api/v1/usage?key_id={}&granularity=day",
            key_id(&app.admin_key)
        ),
    )
    .await;
    let entries = report["data"].as_array().unwrap();
    for project in [a, b] {
        let project = project.to_string();
        let mine: Vec<&Value> = entries
            .iter()
            .filter(|e| e["project_id"] == project.as_str())
            .collect();
        assert_eq!(mine.len(), 1, "one entry for {project}: {entries:?}");
        // Reading its job and cancelling it (creating the project acted in no project yet).
        assert_eq!(mine[0]["requests"], 2, "{}", mine[0]);
        assert_eq!(mine[0]["by_route_group"]["jobs"], 2, "{}", mine[0]);
    }
}

#[tokio::test]
async fn a_call_is_recorded_under_the_route_that_served_it_or_as_unmatched() {
    let app = TestApp::spawn().await;
    let unknown = app.get("/api/v1/wp-login.php", &app.admin_key).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let malformed = app.get("/api/v1/jobs/not-a-job-id", &app.admin_key).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let member = app
        .get(
            &format!(
                "/api/v1/webhooks/{}/deliveries/{}",
                uuid::Uuid::now_v7(),
                "d1"
            ),
            &app.admin_key,
        )
        .await;
    assert!(member.status().is_client_error());

    let records = admin_json(&app, "/api/v1/audit/requests?limit=100").await;
    let route_of = |path: &str| -> String {
        let record = records["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("a record of {path}"));
        record["route"].as_str().unwrap().to_owned()
    };
    assert_eq!(route_of("/api/v1/wp-login.php"), "unmatched");
    assert_eq!(route_of("/api/v1/jobs/not-a-job-id"), "/api/v1/jobs/{id}");
    // Refused before any handler, yet with valid credentials: the record names their caller.
    let admin = key_id(&app.admin_key);
    let actor_of = |path: &str| {
        let record = records["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path);
        record.unwrap()["actor_id"].clone()
    };
    assert_eq!(actor_of("/api/v1/wp-login.php"), admin);
    assert_eq!(actor_of("/api/v1/jobs/not-a-job-id"), admin);
    let delivery = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str().unwrap().starts_with("/api/v1/webhooks/"))
        .unwrap();
    assert_eq!(
        delivery["route"],
        "/api/v1/webhooks/{id}/deliveries/{delivery_id}"
    );
    // The route filter takes the template; unmatched calls count as the `other` route group.
    let unmatched = admin_json(&app, "/api/v1/audit/requests?route=unmatched").await;
    assert_eq!(
        unmatched["data"].as_array().unwrap().len(),
        1,
        "{unmatched}"
    );
    let usage = admin_json(&app, "/api/v1/usage?granularity=day").await;
    let other: i64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["by_route_group"]["other"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(other, 1, "{usage}");
}

#[tokio::test]
async fn a_malformed_call_is_found_under_the_key_that_made_it() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let malformed = app
        .request(reqwest::Method::POST, "/api/v1/jobs", &key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let forged = app
        .request(
            reqwest::Method::POST,
            "/api/v1/jobs",
            "hrld_live_AAAAAAAAAAAAAAAA_nope",
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);

    let mine = admin_json(
        &app,
        &format!("/api/v1/audit/requests?key_id={}", key_id(&key)),
    )
    .await;
    let mine = mine["data"].as_array().unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["status"], 400);
    assert_eq!(mine[0]["project_id"], project.to_string().as_str());
    // Credentials that are not valid name nobody (the id they claim is not taken on trust).
    let all = admin_json(&app, "/api/v1/audit/requests?status=400").await;
    let anonymous = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor_id"].is_null())
        .count();
    assert_eq!(anonymous, 1, "{all}");
}

/// A row of `usage_hourly`: hours after the day's start, actor type and id, project, route and
/// status class.
type Counted = (
    i64,
    Option<&'static str>,
    Option<&'static str>,
    Option<uuid::Uuid>,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn a_usage_report_read_a_page_at_a_time_holds_exactly_the_whole_reports_entries() {
    let app = TestApp::spawn().await;
    // Counts of an hour two days ago, which no request of this test can add to: three hours
    // by day make one bucket; callers with and without a key or project; one entry of four
    // rows (two routes, two status classes), so a page must never split an entry.
    let day = (chrono::Utc::now() - chrono::Duration::days(2))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let project = uuid::Uuid::new_v4();
    let rows: [Counted; 9] = [
        (
            1,
            Some("api_key"),
            Some("key_a"),
            Some(project),
            "/api/v1/jobs",
            "2xx",
        ),
        (
            1,
            Some("api_key"),
            Some("key_a"),
            Some(project),
            "/api/v1/jobs",
            "4xx",
        ),
        (
            1,
            Some("api_key"),
            Some("key_a"),
            Some(project),
            "/api/v1/jobs/{id}",
            "2xx",
        ),
        (
            2,
            Some("api_key"),
            Some("key_a"),
            Some(project),
            "/api/v1/jobs/{id}",
            "4xx",
        ),
        (
            1,
            Some("api_key"),
            Some("key_a"),
            None,
            "/api/v1/projects",
            "2xx",
        ),
        (
            3,
            Some("api_key"),
            Some("key_b"),
            Some(project),
            "/api/v1/jobs",
            "2xx",
        ),
        (1, None, None, None, "/api/v1/jobs", "4xx"),
        (
            2,
            Some("user"),
            Some("user_c"),
            None,
            "/api/v1/auth/me",
            "2xx",
        ),
        (
            5,
            Some("user"),
            Some("user_c"),
            Some(project),
            "/api/v1/jobs",
            "2xx",
        ),
    ];
    for (hour, actor_type, actor_id, project, route, class) in rows {
        sqlx::query(
            "INSERT INTO usage_hourly (hour, actor_type, actor_id, project_id, route, method, \
               status_class, requests) VALUES ($1, $2, $3, $4, $5, 'GET', $6, 7)",
        )
        .bind(day + chrono::Duration::hours(hour))
        .bind(actor_type)
        .bind(actor_id)
        .bind(project)
        .bind(route)
        .bind(class)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let range = format!(
        "from={}&to={}&granularity=day",
        day.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (day + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .replace('+', "%2B");
    let whole = admin_json(&app, &format!("/api/v1/usage?{range}")).await;
    assert_eq!(whole["has_more"], false, "{whole}");
    let entries = whole["data"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{whole}");
    let first = entries
        .iter()
        .find(|e| e["actor_id"] == "key_a" && e["project_id"] == project.to_string().as_str())
        .unwrap();
    assert_eq!(first["requests"], 28, "one entry of four rows: {whole}");

    let mut paged = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let page = admin_json(&app, &format!("/api/v1/usage?{range}&limit=2{cursor}")).await;
        paged.extend(page["data"].as_array().unwrap().iter().cloned());
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null(), "{page}");
            break;
        }
        assert_eq!(page["data"].as_array().unwrap().len(), 2, "{page}");
        cursor = format!("&cursor={}", page["next_cursor"].as_str().unwrap());
    }
    assert_eq!(&paged, entries);

    // A page asked without a range or granularity keeps the ones its report counted (as a report of the last
    // 24 hours must, when an hour passes while it is paged through); one asked with another
    // range, even one holding the cursor's bucket, is refused rather than mixing the two.
    let first = admin_json(&app, &format!("/api/v1/usage?{range}&limit=2")).await;
    let resume = first["next_cursor"].as_str().unwrap();
    let kept = admin_json(&app, &format!("/api/v1/usage?limit=2&cursor={resume}")).await;
    assert_eq!((&kept["from"], &kept["to"]), (&whole["from"], &whole["to"]));
    assert_eq!(kept["data"].as_array().unwrap(), &entries[2..4]);
    let wider = format!(
        "from={}&to={}&granularity=day",
        (day - chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (day + chrono::Duration::days(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
    .replace('+', "%2B");
    let mixed = app
        .get(
            &format!("/api/v1/usage?{wider}&limit=2&cursor={resume}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(mixed.status(), StatusCode::BAD_REQUEST);

    // A cursor from the hourly report of the same day names an hour no daily bucket starts at:
    // refused, not read as the end of the daily report.
    let hourly_range = range.replace("granularity=day", "granularity=hour");
    let hourly = admin_json(&app, &format!("/api/v1/usage?{hourly_range}")).await;
    let at = hourly["data"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| !e["start"].as_str().unwrap().contains("T00:00:00"))
        .expect("an entry after midnight");
    let page = admin_json(
        &app,
        &format!("/api/v1/usage?{hourly_range}&limit={}", at + 1),
    )
    .await;
    let hour_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let elsewhere = app
        .get(
            &format!("/api/v1/usage?{range}&cursor={hour_cursor}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
    let next = admin_json(
        &app,
        &format!("/api/v1/usage?{hourly_range}&cursor={hour_cursor}"),
    )
    .await;
    assert!(!next["data"].as_array().unwrap().is_empty(), "{next}");

    for bad in ["limit=0", "limit=1001", "cursor=nonsense"] {
        let refused = app
            .get(&format!("/api/v1/usage?{range}&{bad}"), &app.admin_key)
            .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_report_of_the_longest_range_pages_on_its_cursor_alone() {
    let app = TestApp::spawn().await;
    let (_, first) = app.project_with_key(&["jobs:read"]).await;
    let (_, second) = app.project_with_key(&["jobs:read"]).await;
    for key in [&first, &second] {
        assert_eq!(app.get("/api/v1/jobs", key).await.status(), StatusCode::OK);
    }
    // 31 days by hour, the longest, between half hours: counted rounded out, 31 days and an
    // hour, which the next page, asked with the cursor alone, must not be refused for.
    let to = chrono::Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap()
        + chrono::Duration::minutes(90);
    let from = to - chrono::Duration::days(31);
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let first_page = admin_json(
        &app,
        &format!("/api/v1/usage?from={}&to={}&limit=1", at(from), at(to)),
    )
    .await;
    assert_eq!(first_page["has_more"], true, "{first_page}");
    let cursor = first_page["next_cursor"].as_str().unwrap();
    let next = app
        .get(
            &format!("/api/v1/usage?limit=1&cursor={cursor}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(next.status(), StatusCode::OK);
    let next: Value = next.json().await.unwrap();
    assert_eq!(
        (&next["from"], &next["to"]),
        (&first_page["from"], &first_page["to"])
    );
    assert_ne!(next["data"], first_page["data"]);
}

#[tokio::test]
async fn a_report_that_ends_in_the_first_day_a_range_may_name_starts_there() {
    let app = TestApp::spawn().await;
    // The default range, the 24 hours before `to`, would start before the year 0001.
    let early = admin_json(&app, "/api/v1/usage?to=0001-01-01T05:00:00Z").await;
    assert_eq!(early["from"], "0001-01-01T00:00:00+00:00", "{early}");
    assert_eq!(early["data"], serde_json::json!([]), "{early}");
    // A `from` sent before the year 0001 is still refused, and named.
    let refused = app
        .get(
            "/api/v1/usage?from=0000-12-31T00:00:00Z&to=0001-01-01T05:00:00Z",
            &app.admin_key,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "from", "{problem}");
    // A `to` at the first instant leaves the default range empty: `to` is named, not the
    // `from` the client never sent.
    let empty = app
        .get("/api/v1/usage?to=0001-01-01T00:00:00Z", &app.admin_key)
        .await;
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let problem: Value = empty.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "to", "{problem}");
}
