//! How a page of the request log is found once the log is large: a project's records (the
//! page a project-bound caller reads, or `project=`) come from `request_log_by_project` and a
//! caller's from `request_log_by_actor`, not from a walk back through every tenant's records.
//! The plan is read from PostgreSQL for the listing's own statement, with its values bound as
//! the route binds them, on a log of 20,000 records where the asked project holds 20. A time
//! window that ends in the past and holds few records is read through `request_log_by_time`
//! instead of backwards from the log's end (the statement the route sent is read from
//! `pg_stat_statements`), and `GET /admin/security` reads the last day's
//! refusals through `request_log_refused`, which holds refused calls only.

use chrono::{DateTime, Utc};
use herald_api::audit::{list_sql, LIST_SQL, WINDOW_ROWS, WINDOW_SQL};
use serde_json::Value;
use sqlx::types::Uuid;

use crate::support::sent::runs;
use crate::support::TestApp;

/// `sql` with its `RECORD_COLUMNS` spelled out: every column of a request-log record, in the
/// order the tests' inserts give them.
fn records_sql(sql: &str) -> String {
    sql.replace(
        "RECORD_COLUMNS",
        "seq, occurred_at, request_id, actor_type, actor_id, project_id, route, method, path, \
         status, latency_us, request_bytes, response_bytes, client_ip, user_agent, outcome, \
         error_code, hash",
    )
}

/// The plan PostgreSQL makes for one page, with the project filter (`$2`), the caller's
/// visible projects (`$10`) and the actor filter (`$1`) as given.
async fn plan(
    app: &TestApp,
    actor: Option<&str>,
    project: Option<Uuid>,
    visible: Option<Vec<Uuid>>,
) -> String {
    plan_of(app, LIST_SQL, actor, project, visible, None).await
}

/// The plan of `statement` (the listing's or the window's) with these values bound.
async fn plan_of(
    app: &TestApp,
    statement: &str,
    actor: Option<&str>,
    project: Option<Uuid>,
    visible: Option<Vec<Uuid>>,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> String {
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {statement}"))
        .persistent(false)
        .bind(actor)
        .bind(project)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(None::<i32>)
        .bind(None::<String>)
        .bind(window.map(|w| w.0))
        .bind(window.map(|w| w.1))
        .bind(None::<i64>)
        .bind(visible)
        .bind(21_i64)
        .bind(actor.map(|_| "api_key"))
        .fetch_all(&app.pool)
        .await
        .unwrap();
    lines.join("\n")
}

#[tokio::test]
async fn a_page_of_one_project_or_one_caller_is_read_through_its_index() {
    let app = TestApp::spawn().await;
    let rare = Uuid::new_v4();
    let busy: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    // 20,000 records after the log's end: every thousandth is the rare project's, the rest
    // spread over fifty busy projects and a thousand keys.
    sqlx::query(&records_sql(
        "INSERT INTO request_log (RECORD_COLUMNS) \
         SELECT m.seq + g, now(), 'req_' || g, 'api_key', 'key_' || (g % 1000), \
                CASE WHEN g % 1000 = 0 THEN $1 ELSE ($2::uuid[])[1 + g % 50] END, \
                '/api/v1/jobs/{id}', 'GET', '/api/v1/jobs/x', 200, 100, 0, 100, '127.0.0.1', \
                'curl', 'success', NULL, repeat('0', 64) \
           FROM generate_series(1, 20000) g, (SELECT coalesce(max(seq), 0) AS seq FROM request_log) m",
    ))
    .bind(rare)
    .bind(&busy)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE request_log")
        .execute(&app.pool)
        .await
        .unwrap();

    let bound = plan(&app, None, None, Some(vec![rare])).await;
    assert!(bound.contains("request_log_by_project"), "{bound}");
    let asked = plan(&app, None, Some(rare), None).await;
    assert!(asked.contains("request_log_by_project"), "{asked}");
    let caller = plan(&app, Some("key_7"), None, None).await;
    assert!(caller.contains("request_log_by_actor"), "{caller}");
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A page of `GET /audit/requests` with these query parameters, read with the admin key.
async fn page(app: &TestApp, query: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/audit/requests?{query}"), &app.admin_key)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The sequence numbers and times of a page's records.
fn records(page: &Value) -> Vec<(i64, DateTime<Utc>)> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_i64().unwrap(),
                at(r["occurred_at"].as_str().unwrap()),
            )
        })
        .collect()
}

/// How the window's statement and the listing's begin, as `pg_stat_statements` keeps them.
const WINDOW_START: &str = "WITH w AS MATERIALIZED (SELECT * FROM request_log";
const LIST_START: &str = "SELECT * FROM request_log WHERE";

/// The statement `list_sql` takes for the window `from`..`to`, and the newest record of the
/// window's first page, read through HTTP.
async fn newest(app: &TestApp, from: &str, to: &str) -> (&'static str, (i64, DateTime<Utc>)) {
    let statement = list_sql(&app.pool, Some(at(from)), Some(at(to)))
        .await
        .unwrap();
    let first = page(app, &format!("from={from}&to={to}&limit=5")).await;
    (statement, records(&first)[0])
}

#[tokio::test]
async fn a_window_that_ends_in_the_past_is_read_through_the_time_index() {
    let app = TestApp::spawn().await;
    // 30,000 records after the log's end, one a second from 2026-01-01T00:00:01Z on.
    let first: i64 = sqlx::query_scalar(&records_sql(
        "WITH m AS (SELECT coalesce(max(seq), 0) AS seq FROM request_log), \
              ins AS (INSERT INTO request_log (RECORD_COLUMNS) \
                      SELECT m.seq + g, timestamptz '2026-01-01T00:00:00Z' + g * interval '1 second', \
                             'req_' || g, 'api_key', 'key_' || (g % 10), NULL, '/api/v1/jobs/{id}', \
                             'GET', '/api/v1/jobs/x', 200, 100, 0, 100, '127.0.0.1', 'curl', \
                             'success', NULL, repeat('0', 64) \
                        FROM generate_series(1, 30000) g, m) \
         SELECT seq + 1 FROM m",
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE request_log")
        .execute(&app.pool)
        .await
        .unwrap();

    // An hour, 3,600 records, far behind the log's end: read window first, through the index.
    let (from, to) = (at("2026-01-01T02:00:00Z"), at("2026-01-01T03:00:00Z"));
    let statement = list_sql(&app.pool, Some(from), Some(to)).await.unwrap();
    assert_eq!(statement, WINDOW_SQL);
    let window = plan_of(&app, statement, None, None, None, Some((from, to))).await;
    assert!(window.contains("request_log_by_time"), "{window}");
    // Its newest records first (the one at 02:59:59 is the 10,799th), then the next page, each
    // read by the route with the window's statement.
    let hour = "from=2026-01-01T02:00:00Z&to=2026-01-01T03:00:00Z";
    let (windowed, walked) = (
        runs(&app.pool, WINDOW_START).await,
        runs(&app.pool, LIST_START).await,
    );
    let one = page(&app, &format!("{hour}&limit=100")).await;
    assert_eq!(runs(&app.pool, WINDOW_START).await, windowed + 1);
    let seen = records(&one);
    assert_eq!(seen.len(), 100);
    assert_eq!(seen[0], (first + 10_798, at("2026-01-01T02:59:59Z")));
    assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 - 1));
    let cursor = one["next_cursor"].as_str().unwrap();
    let two = page(&app, &format!("{hour}&limit=100&cursor={cursor}")).await;
    assert_eq!(records(&two)[0].0, first + 10_698);
    // With a key filter too: every tenth record is key_3's.
    let keyed = records(&page(&app, &format!("{hour}&key_id=key_3")).await);
    assert_eq!(keyed[0], (first + 10_792, at("2026-01-01T02:59:53Z")));
    assert!(keyed.windows(2).all(|w| w[1].0 == w[0].0 - 10));
    assert_eq!(runs(&app.pool, WINDOW_START).await, windowed + 3);
    assert_eq!(runs(&app.pool, LIST_START).await, walked);

    // Seven hours hold more than WINDOW_ROWS records: read backwards as any page, same answer.
    const { assert!(7 * 3_600 > WINDOW_ROWS) };
    let (statement, top) = newest(&app, "2026-01-01T00:00:00Z", "2026-01-01T07:00:00Z").await;
    assert_eq!(statement, LIST_SQL);
    assert_eq!(top, (first + 25_198, at("2026-01-01T06:59:59Z")));
    assert_eq!(runs(&app.pool, LIST_START).await, walked + 1);
    assert_eq!(runs(&app.pool, WINDOW_START).await, windowed + 3);
    // Twenty minutes just before the last of those records: fewer records after the window
    // than in it, so the backwards read reaches it sooner.
    let (statement, top) = newest(&app, "2026-01-01T07:59:00Z", "2026-01-01T08:19:00Z").await;
    assert_eq!(statement, LIST_SQL);
    assert_eq!(top, (first + 29_938, at("2026-01-01T08:18:59Z")));
    // Without an end the window reaches the log's end, where the backwards read starts.
    let from = at("2026-01-01T07:59:00Z");
    assert_eq!(
        list_sql(&app.pool, Some(from), None).await.unwrap(),
        LIST_SQL
    );
}

#[tokio::test]
async fn the_security_summary_reads_refusals_through_their_own_index() {
    use herald_projections::usage::{REFUSED_SQL, TOP_REFUSED_IPS_SQL};

    let app = TestApp::spawn().await;
    // 20,000 records of the last hour after the log's end: every thousandth refused (401), from
    // one of two addresses.
    sqlx::query(&records_sql(
        "INSERT INTO request_log (RECORD_COLUMNS) \
         SELECT m.seq + g, now() - (g % 3600) * interval '1 second', 'req_' || g, NULL, NULL, \
                NULL, '/api/v1/jobs', 'GET', '/api/v1/jobs', \
                CASE WHEN g % 1000 = 0 THEN 401 ELSE 200 END, 100, 0, 100, \
                '10.0.0.' || (g % 2000 / 1000), 'curl', \
                CASE WHEN g % 1000 = 0 THEN 'denied' ELSE 'success' END, NULL, repeat('0', 64) \
           FROM generate_series(1, 20000) g, (SELECT coalesce(max(seq), 0) AS seq FROM request_log) m",
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE request_log")
        .execute(&app.pool)
        .await
        .unwrap();

    for statement in [REFUSED_SQL, TOP_REFUSED_IPS_SQL] {
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {statement}"))
            .fetch_all(&app.pool)
            .await
            .unwrap();
        let plan = lines.join("\n");
        assert!(plan.contains("request_log_refused"), "{plan}");
    }
    let response = app.get("/api/v1/admin/security", &app.admin_key).await;
    assert_eq!(response.status(), 200);
    let security: serde_json::Value = response.json().await.unwrap();
    assert_eq!(security["failed_authentications_24h"], 20, "{security}");
    assert_eq!(
        security["top_refused_ips"][0]["ip"], "10.0.0.0",
        "{security}"
    );
    assert_eq!(security["top_refused_ips"][0]["refusals"], 10, "{security}");
    assert_eq!(
        security["top_refused_ips"][1]["ip"], "10.0.0.1",
        "{security}"
    );
    assert!(security["audit_records_24h"].as_i64().unwrap() >= 20_000);
}
