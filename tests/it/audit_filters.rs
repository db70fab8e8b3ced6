//! The request log's filters: a value no record can hold is refused with a problem naming the
//! parameter (not answered with an empty page), and `key_id` / `user_id` each match their own
//! kind of actor only. A cursor the API did not issue, or a `limit` outside 1–100, is refused
//! by both logs.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{problem, TestApp, PASSWORD};

#[tokio::test]
async fn filters_no_record_can_match_are_refused_with_the_parameter_named() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("outcome=bogus", "outcome"),
        ("method=GE%20T", "method"),
        ("method=", "method"),
        ("status=999", "status"),
        ("from=2026-12-04T10:00:00Z&to=2026-12-04T09:00:00Z", "from"),
        ("user_id=notauuid", "user_id"),
        ("key_id=abc", "key_id"),
    ] {
        let path = format!("/api/v1/audit/requests?{query}");
        let refused = app.get(&path, &app.admin_key).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = problem(refused).await;
        assert_eq!(body["code"], "VALIDATION_FAILED", "{body}");
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let export = app
        .get(
            "/api/v1/audit/requests/export?from=2026-12-04T10:00:00Z&to=2026-12-04T09:00:00Z",
            &app.admin_key,
        )
        .await;
    assert_eq!(export.status(), StatusCode::BAD_REQUEST);
    // Lower case is a method all the same; an empty range is not a mistake.
    for query in [
        "method=get&status=200&outcome=success",
        "from=2026-12-04T10:00:00Z&to=2026-12-04T10:00:00Z",
    ] {
        let path = format!("/api/v1/audit/requests?{query}");
        assert_eq!(
            app.get(&path, &app.admin_key).await.status(),
            StatusCode::OK,
            "{query}"
        );
    }
}

#[tokio::test]
async fn any_method_a_client_sent_is_found_as_sent_or_in_upper_case() {
    let app = TestApp::spawn().await;
    let odd = reqwest::Method::from_bytes(b"FOO").unwrap();
    let sent = app
        .request(odd, "/api/v1/jobs", &app.admin_key)
        .send()
        .await;
    assert!(sent.unwrap().status().is_client_error());
    app.get("/api/v1/jobs", &app.admin_key).await;
    for (query, method) in [("method=FOO", "FOO"), ("method=get", "GET")] {
        let path = format!("/api/v1/audit/requests?{query}");
        let page: Value = app.get(&path, &app.admin_key).await.json().await.unwrap();
        let methods: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["method"].as_str().unwrap())
            .collect();
        assert!(
            !methods.is_empty() && methods.iter().all(|m| *m == method),
            "{page}"
        );
    }
}

#[tokio::test]
async fn key_id_and_user_id_match_their_own_kind_of_actor() {
    let app = TestApp::spawn().await;
    let user = app.create_user("auditor@example.com", PASSWORD, true).await;
    let token = app.login("auditor@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app
        .as_user(reqwest::Method::GET, "/api/v1/auth/me", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    let list = |query: String| {
        let app = &app;
        async move {
            let response = app
                .get(&format!("/api/v1/audit/requests?{query}"), &app.admin_key)
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{query}");
            let body: Value = response.json().await.unwrap();
            body["data"].as_array().unwrap().len()
        }
    };
    assert!(
        list(format!("user_id={user}")).await >= 1,
        "the user's own records"
    );
    // A user's id is no key's: refused as one, not answered with an empty page.
    let refused = app
        .get(
            &format!("/api/v1/audit/requests?key_id={user}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(refused).await["errors"][0]["field"], "key_id");
}

#[tokio::test]
async fn both_logs_refuse_a_cursor_they_did_not_issue_and_a_limit_out_of_range() {
    let app = TestApp::spawn().await;
    for list in ["/api/v1/audit/requests", "/api/v1/events"] {
        for (query, field) in [
            ("cursor=not-a-cursor", "cursor"),
            ("limit=0", "limit"),
            ("limit=101", "limit"),
        ] {
            let path = format!("{list}?{query}");
            let refused = app.get(&path, &app.admin_key).await;
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}");
            let body = problem(refused).await;
            assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
        }
        let most = app.get(&format!("{list}?limit=100"), &app.admin_key).await;
        assert_eq!(most.status(), StatusCode::OK, "{list}");
    }
    // A position is 1 or more: a cursor naming 0 or -5 was never issued (`[0,false]` and
    // `[-5,true]` for the event log, which pages in either order).
    let forged = [
        "/api/v1/audit/requests?cursor=MA",
        "/api/v1/audit/requests?cursor=LTU",
        "/api/v1/events?cursor=WzAsZmFsc2Vd",
        "/api/v1/events?order=asc&cursor=Wy01LHRydWVd",
    ];
    for path in forged {
        let refused = app.get(path, &app.admin_key).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

#[tokio::test]
async fn a_range_that_ends_before_it_starts_is_refused_by_every_reader_of_the_logs() {
    let app = TestApp::spawn().await;
    let backwards = "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z";
    // So is a time outside the years 0001–9999 (PostgreSQL cannot compare it; RFC 3339 cannot
    // write it), rather than answered 500 or with an empty export.
    let before_the_calendar = "from=-4714-11-24T00:00:00Z";
    let past_9999 = "to=%2B10000-01-01T00:00:00Z";
    for read in [
        "/api/v1/audit/requests",
        "/api/v1/audit/requests/export",
        "/api/v1/audit/verify",
        "/api/v1/events",
        "/api/v1/usage",
    ] {
        for (query, field) in [
            (backwards, "from"),
            (before_the_calendar, "from"),
            (past_9999, "to"),
        ] {
            let path = format!("{read}?{query}");
            let refused = app.get(&path, &app.admin_key).await;
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{path}");
            let body = problem(refused).await;
            assert_eq!(body["code"], "VALIDATION_FAILED", "{path}: {body}");
            assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn a_method_of_kilobytes_is_recorded_cut_and_usage_goes_on_counting() {
    let app = TestApp::spawn().await;
    let long = "X".repeat(3000);
    let method = reqwest::Method::from_bytes(long.as_bytes()).unwrap();
    let response = app
        .request(method, "/api/v1/jobs", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let recorded: String = sqlx::query_scalar(
        "SELECT method FROM request_log WHERE method LIKE 'X%' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(recorded, "X".repeat(16));
    // Usage keys its rows on the method: counting goes on (a whole one would be an index entry
    // too large for PostgreSQL, failing this count and every one after it).
    herald_projections::usage_count::count(&app.pool)
        .await
        .unwrap();
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(requests), 0)::bigint FROM usage_hourly WHERE method LIKE 'X%'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(counted, 1);
}
