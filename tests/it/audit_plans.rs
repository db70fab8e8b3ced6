//! How a page of the request log is found once the log is large: a project's records (the
//! page a project-bound caller reads, or `project=`) come from `request_log_by_project` and a
//! caller's from `request_log_by_actor`, not from a walk back through every tenant's records.
//! The plan is read from PostgreSQL for the listing's own statement, with its values bound as
//! the route binds them, on a log of 20,000 records where the asked project holds 20. A time
//! window that ends in the past, with more than twice as many records after it as in it, is
//! walked only between its own first and last sequence numbers (found through
//! `request_log_by_time`) instead of backwards from the log's end (the statement the route
//! sent is read from `pg_stat_statements`), and `GET /admin/security` reads the last day's
//! refusals through `request_log_refused`, which holds refused calls only.

use chrono::{DateTime, Utc};
use herald_api::audit::{walk, Walk, LIST_SQL, RANGE_SQL};
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

/// The plan of `statement` (the listing's, or the bounded one with its `range`) with these
/// values bound.
async fn plan_of(
    app: &TestApp,
    statement: &str,
    actor: Option<&str>,
    project: Option<Uuid>,
    visible: Option<Vec<Uuid>>,
    range: Option<(i64, i64)>,
) -> String {
    let sql = format!("EXPLAIN {statement}");
    let mut query = sqlx::query_scalar(&sql)
        .persistent(false)
        .bind(actor)
        .bind(project)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind(None::<i32>)
        .bind(None::<String>)
        .bind(None::<DateTime<Utc>>)
        .bind(None::<DateTime<Utc>>)
        .bind(None::<i64>)
        .bind(visible)
        .bind(21_i64)
        .bind(actor.map(|_| "api_key"));
    if let Some((low, high)) = range {
        query = query.bind(low).bind(high);
    }
    let lines: Vec<String> = query.fetch_all(&app.pool).await.unwrap();
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

/// How the bounded statement and the listing's begin, as `pg_stat_statements` keeps them.
const RANGE_START: &str = "SELECT * FROM request_log WHERE seq BETWEEN";
const LIST_START: &str = "SELECT * FROM request_log WHERE ($1::text IS NULL";
const BOUNDS_START: &str = "SELECT min(seq), max(seq) FROM (SELECT seq FROM request_log";

/// How a page of the window `from`..`to` walks.
async fn walk_of(app: &TestApp, from: Option<&str>, to: Option<&str>) -> Walk {
    walk(&app.pool, from.map(at), to.map(at), false, None)
        .await
        .unwrap()
}

/// The newest record of the first page of the window `from`..`to`, read through HTTP.
async fn newest(app: &TestApp, from: &str, to: &str) -> (i64, DateTime<Utc>) {
    records(&page(app, &format!("from={from}&to={to}&limit=5")).await)[0]
}

#[tokio::test]
async fn a_window_that_ends_in_the_past_bounds_its_walk() {
    let app = TestApp::spawn().await;
    // 50,000 records after the log's end, one a second from 2026-01-01T00:00:01Z on (record g
    // is `first + g - 1`), then one more whose request began at 02:30:00.5 and ended last (a
    // long upload's, say).
    let first: i64 = sqlx::query_scalar(&records_sql(
        "WITH m AS (SELECT coalesce(max(seq), 0) AS seq FROM request_log), \
              ins AS (INSERT INTO request_log (RECORD_COLUMNS) \
                      SELECT m.seq + g, timestamptz '2026-01-01T00:00:00Z' + \
                               CASE WHEN g <= 50000 THEN g * interval '1 second' \
                                    ELSE interval '02:30:00.5' END, \
                             'req_' || g, 'api_key', 'keyid0000000000' || (g % 10), NULL, '/api/v1/jobs/{id}', \
                             'GET', '/api/v1/jobs/x', 200, 100, 0, 100, '127.0.0.1', 'curl', \
                             'success', NULL, repeat('0', 64) \
                        FROM generate_series(1, 50001) g, m) \
         SELECT seq + 1 FROM m",
    ))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE request_log")
        .execute(&app.pool)
        .await
        .unwrap();
    let (late, at_late) = (first + 50_000, at("2026-01-01T02:30:00.5Z"));

    // An hour, 3,601 records (the late one among them), far behind the log's end: the walk is
    // bounded to the window's sequence numbers, found through the time index.
    let hour = (Some("2026-01-01T02:00:00Z"), Some("2026-01-01T03:00:00Z"));
    let bounded = walk_of(&app, hour.0, hour.1).await;
    assert_eq!(bounded, Walk::Between(first + 7_199, late));
    let Walk::Between(low, high) = bounded else {
        unreachable!()
    };
    let plan = plan_of(&app, RANGE_SQL, None, None, None, Some((low, high))).await;
    assert!(plan.contains("request_log_pkey"), "{plan}");
    // Its newest records first (the late one, then the one at 02:59:59, the 10,799th), then the
    // next pages, each read by the route with the bounded statement; the bounds are read for
    // the first page only (later ones take them from the cursor), and the last page ends at the
    // window's first record.
    let query = "from=2026-01-01T02:00:00Z&to=2026-01-01T03:00:00Z";
    let (ranged, walked, bounded_reads) = (
        runs(&app.pool, RANGE_START).await,
        runs(&app.pool, LIST_START).await,
        runs(&app.pool, BOUNDS_START).await,
    );
    let one = page(&app, &format!("{query}&limit=100")).await;
    assert_eq!(runs(&app.pool, RANGE_START).await, ranged + 1);
    let seen = records(&one);
    assert_eq!(seen.len(), 100);
    assert_eq!(seen[0], (late, at_late));
    assert_eq!(seen[1], (first + 10_798, at("2026-01-01T02:59:59Z")));
    assert!(seen[1..].windows(2).all(|w| w[1].0 == w[0].0 - 1));
    let mut all = seen;
    let second = one["next_cursor"].as_str().unwrap().to_owned();
    let mut cursor = second.clone();
    let mut pages = 1;
    loop {
        let next = page(&app, &format!("{query}&limit=100&cursor={cursor}")).await;
        pages += 1;
        all.extend(records(&next));
        match next["next_cursor"].as_str() {
            Some(more) => cursor = more.to_owned(),
            None => break,
        }
    }
    assert_eq!(all.len(), 3_601);
    assert_eq!(all[100].0, first + 10_699);
    assert_eq!(all[3_600], (first + 7_199, at("2026-01-01T02:00:00Z")));
    assert_eq!(runs(&app.pool, RANGE_START).await, ranged + pages);
    assert_eq!(runs(&app.pool, BOUNDS_START).await, bounded_reads + 1);
    // The first page's cursor sent with another window (its first half hour) is followed from
    // its position alone (before the 10,700th record), not within the range it carries.
    let other = page(
        &app,
        &format!("from=2026-01-01T02:00:00Z&to=2026-01-01T02:30:00Z&limit=2&cursor={second}"),
    )
    .await;
    let got: Vec<i64> = records(&other).iter().map(|r| r.0).collect();
    assert_eq!(got, [first + 8_998, first + 8_997]);
    assert_eq!(runs(&app.pool, LIST_START).await, walked + 1);
    // With a key filter, the key's own index is walked from the end as before: every tenth
    // record is the key keyid00000000003's.
    let keyed = records(&page(&app, &format!("{query}&key_id=keyid00000000003")).await);
    assert_eq!(keyed[0], (first + 10_792, at("2026-01-01T02:59:53Z")));
    assert!(keyed.windows(2).all(|w| w[1].0 == w[0].0 - 10));
    assert_eq!(runs(&app.pool, LIST_START).await, walked + 2);
    let hour_of = |indexed| walk(&app.pool, hour.0.map(at), hour.1.map(at), indexed, None);
    assert_eq!(hour_of(true).await.unwrap(), Walk::Whole);
    assert_eq!(hour_of(false).await.unwrap(), bounded);
    let (ranged, walked) = (
        runs(&app.pool, RANGE_START).await,
        runs(&app.pool, LIST_START).await,
    );

    // Four hours, 14,401 records, and 32,000 after them (more than twice as many): bounded.
    // Five hours, 18,001, and 28,400 after them: walked from the end. Both give the same page.
    let four = ("2026-01-01T01:00:00Z", "2026-01-01T05:00:00Z");
    assert_eq!(
        walk_of(&app, Some(four.0), Some(four.1)).await,
        Walk::Between(first + 3_599, late)
    );
    assert_eq!(newest(&app, four.0, four.1).await, (late, at_late));
    let five = ("2026-01-01T01:00:00Z", "2026-01-01T06:00:00Z");
    assert_eq!(walk_of(&app, Some(five.0), Some(five.1)).await, Walk::Whole);
    assert_eq!(newest(&app, five.0, five.1).await, (late, at_late));
    assert_eq!(runs(&app.pool, RANGE_START).await, ranged + 1);
    assert_eq!(runs(&app.pool, LIST_START).await, walked + 1);
    // Everything before 02:00 (no start): the first 7,199 records (the app's own are newer).
    assert_eq!(
        walk_of(&app, None, hour.0).await,
        Walk::Between(first, first + 7_198)
    );
    // A window with no records: an empty range, an empty page.
    let empty = (Some("2025-01-01T00:00:00Z"), Some("2025-01-02T00:00:00Z"));
    assert_eq!(walk_of(&app, empty.0, empty.1).await, Walk::Between(1, 0));
    let none = page(&app, "from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z").await;
    assert_eq!(none["data"], serde_json::json!([]));
    assert_eq!(runs(&app.pool, RANGE_START).await, ranged + 2);

    // Ten hours hold more records than the log holds after them: walked from the end, same
    // answer.
    let ten = ("2026-01-01T00:00:00Z", "2026-01-01T10:00:00Z");
    assert_eq!(walk_of(&app, Some(ten.0), Some(ten.1)).await, Walk::Whole);
    assert_eq!(
        newest(&app, ten.0, ten.1).await,
        (late, at_late),
        "the late record is the newest of these ten hours too"
    );
    assert_eq!(runs(&app.pool, LIST_START).await, walked + 2);
    // Twenty minutes just before the last of the one-a-second records: fewer after than in it.
    let near = ("2026-01-01T13:30:00Z", "2026-01-01T13:50:00Z");
    assert_eq!(walk_of(&app, Some(near.0), Some(near.1)).await, Walk::Whole);
    assert_eq!(
        newest(&app, near.0, near.1).await,
        (first + 49_798, at("2026-01-01T13:49:59Z"))
    );
    // Without an end the window reaches the log's end, where the walk starts.
    assert_eq!(walk_of(&app, hour.0, None).await, Walk::Whole);
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
