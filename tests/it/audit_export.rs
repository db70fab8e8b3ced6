//! Exporting the request log (NDJSON and CSV, streamed, limited to the caller's projects,
//! ending where the log ended when the export began) and retention: pruning the oldest records leaves a chain that still verifies from its anchor
//! and still catches a record removed afterwards.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestApp;

const AGENT: &str = "agent, \"quoted\"";
/// A user agent a spreadsheet would run as a formula.
const FORMULA: &str = "=HYPERLINK(\"http://example.invalid\")";

async fn export(app: &TestApp, key: &str, query: &str) -> (String, String, String) {
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/audit/requests/export{query}"),
            key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    (content_type, disposition, response.text().await.unwrap())
}

async fn record_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_request_log_exports_as_ndjson_and_csv_within_the_callers_projects() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "audit:read"]).await;
    for _ in 0..3 {
        let response = app
            .request(reqwest::Method::GET, "/api/v1/jobs", &key)
            .header("user-agent", AGENT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.get("/api/v1/jobs", "hrld_live_nope").await;
    let formula = app
        .request(reqwest::Method::GET, "/api/v1/jobs", &key)
        .header("user-agent", FORMULA)
        .send()
        .await
        .unwrap();
    assert_eq!(formula.status(), StatusCode::OK);

    let before = record_count(&app).await;
    let (content_type, disposition, body) = export(&app, &app.admin_key, "").await;
    assert_eq!(content_type, "application/x-ndjson");
    assert!(
        disposition.contains("herald-requests.ndjson"),
        "{disposition}"
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // Every record, ending with the export's own: it was committed before the body streamed.
    assert_eq!(lines.len() as i64, before + 1);
    assert_eq!(
        lines.last().unwrap()["route"],
        "/api/v1/audit/requests/export"
    );
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first, no gap"
    );
    assert!(lines
        .iter()
        .all(|l| l["hash"].as_str().unwrap().len() == 64));

    // The export itself was recorded before it streamed, its size unknown then.
    let streamed: i64 = sqlx::query_scalar(
        "SELECT response_bytes FROM request_log WHERE route = '/api/v1/audit/requests/export' \
          ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(streamed, -1);

    let (content_type, disposition, csv) = export(&app, &app.admin_key, "?format=csv").await;
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    assert!(disposition.contains("herald-requests.csv"));
    let mut rows = csv.lines();
    assert!(rows
        .next()
        .unwrap()
        .starts_with("seq,occurred_at,request_id,"));
    assert_eq!(
        rows.count() as i64,
        before + 2,
        "one line per record, both exports included"
    );
    assert!(
        csv.contains("\"agent, \"\"quoted\"\"\""),
        "the user agent is quoted"
    );
    // A formula is defused for spreadsheets in CSV, and exported as recorded in NDJSON.
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://example.invalid\"\")\""),
        "{csv}"
    );
    assert!(lines.iter().any(|l| l["user_agent"] == FORMULA));

    // The project's key exports its own project's records only.
    let (_, _, own) = export(&app, &key, "?format=ndjson").await;
    let own: Vec<Value> = own
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(own.len() >= 4);
    assert!(own
        .iter()
        .all(|r| r["project_id"] == project.to_string().as_str()));
    let bad = app
        .get("/api/v1/audit/requests/export?format=xml", &key)
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // RFC 4180 lines end with CRLF.
    assert!(csv.ends_with("\r\n") && !csv.replace("\r\n", "").contains('\n'));

    // The list's filters apply to the export, checked as the list checks them.
    let key_id = crate::support::key_id(&key);
    let (_, _, mine) = export(
        &app,
        &app.admin_key,
        &format!("?key_id={key_id}&status=200"),
    )
    .await;
    let mine: Vec<Value> = mine
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        mine.len(),
        5,
        "three reads, the formula's and its own export"
    );
    assert!(mine
        .iter()
        .all(|r| r["actor_id"] == key_id && r["status"] == 200));
    let (_, _, denied) = export(&app, &app.admin_key, "?outcome=denied&method=get").await;
    assert_eq!(denied.lines().count(), 1, "the unknown key's 401: {denied}");
    for refused in [
        "?outcome=bogus",
        "?status=999",
        "?key_id=a&user_id=b",
        "?method=G%20T",
    ] {
        let url = format!("/api/v1/audit/requests/export{refused}");
        let answer = app.get(&url, &app.admin_key).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{refused}");
    }
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable_from_its_anchor() {
    let app = TestApp::spawn().await;
    for _ in 0..12 {
        app.get("/api/v1/jobs", &app.admin_key).await;
    }
    let (fifth_at, fifth_hash): (chrono::DateTime<chrono::Utc>, String) =
        sqlx::query_as("SELECT occurred_at, hash FROM request_log WHERE seq = 5")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let removed = herald_api::audit::prune(
        &app.pool,
        &crate::support::chain_key(),
        fifth_at + chrono::Duration::microseconds(1),
    )
    .await
    .unwrap();
    assert!(removed >= 5, "at least the first five: {removed}");
    let first_kept: i64 = sqlx::query_scalar("SELECT min(seq) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(first_kept, removed as i64 + 1, "a prefix of the chain went");
    if removed == 5 {
        let anchor: String = sqlx::query_scalar("SELECT hash FROM request_log_anchor")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(anchor, fifth_hash);
    }

    let check: Value = app
        .get("/api/v1/audit/verify", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check["ok"], true, "{check}");
    // The export's prev_hash (derived, not stored) links each record to the one before it,
    // the first remaining one to the anchor.
    let (_, _, lines) = export(&app, &app.admin_key, "?format=ndjson").await;
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let anchor: String = sqlx::query_scalar("SELECT hash FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(records[0]["seq"], first_kept);
    assert_eq!(records[0]["prev_hash"], anchor.as_str());
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
    }
    // Pruning again changes nothing; a record removed by hand is still caught.
    let again = herald_api::audit::prune(
        &app.pool,
        &crate::support::chain_key(),
        fifth_at + chrono::Duration::microseconds(1),
    )
    .await
    .unwrap();
    assert_eq!(again, 0);
    sqlx::query("DELETE FROM request_log WHERE seq = $1")
        .bind(first_kept + 2)
        .execute(&app.pool)
        .await
        .unwrap();
    let check: Value = app
        .get("/api/v1/audit/verify", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check["ok"], false, "{check}");
    assert_eq!(
        check["first_broken_seq"],
        first_kept + 2,
        "the missing record"
    );
}

/// Appends `count` copies of the log's last record after it, straight in SQL (the chain is not
/// what this looks at), and returns the new last sequence number.
async fn append_copies(app: &TestApp, count: i64) -> i64 {
    sqlx::query_scalar(
        "WITH last AS (SELECT * FROM request_log ORDER BY seq DESC LIMIT 1), \
         added AS (INSERT INTO request_log (seq, occurred_at, request_id, actor_type, actor_id, \
              project_id, route, method, path, status, latency_us, request_bytes, \
              response_bytes, client_ip, user_agent, outcome, error_code, hash) \
            SELECT last.seq + n, occurred_at, request_id, actor_type, actor_id, project_id, \
                   route, method, path, status, latency_us, request_bytes, response_bytes, \
                   client_ip, user_agent, outcome, error_code, hash \
              FROM last, generate_series(1, $1) n RETURNING seq) \
         SELECT max(seq) FROM added",
    )
    .bind(count)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// An admin's NDJSON export of the whole log, answered (its body not read yet).
async fn begin_export(app: &TestApp) -> reqwest::Response {
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/v1/audit/requests/export",
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

#[tokio::test]
async fn an_export_ends_where_the_log_ended_when_it_began() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/jobs", &app.admin_key).await;
    // Fifty pages, far more than the sockets between server and client can buffer, so the
    // server is still reading pages when more records arrive.
    let filled = append_copies(&app, 50_000).await;
    let mut response = begin_export(&app).await;
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    let later = append_copies(&app, 5_000).await;
    assert!(later > filled + 1);
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let seqs: Vec<i64> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    // Everything up to the export's own record (committed before its first byte), in order,
    // and nothing appended after it began.
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(
        seqs.last(),
        Some(&(filled + 1)),
        "ends at the export's own record"
    );
    assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "no gap");
}

#[tokio::test]
async fn an_export_that_retention_overtakes_ends_with_an_error_line_not_a_gap() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/jobs", &app.admin_key).await;
    let filled = append_copies(&app, 50_000).await;
    let mut response = begin_export(&app).await;
    let first = response.chunk().await.unwrap().unwrap();
    // Retention prunes most of the log (as `audit::prune` does: anchor, then delete) while
    // the export is still on its first pages.
    let pruned_to = filled - 100;
    sqlx::query(
        "INSERT INTO request_log_anchor (id, seq, hash) \
         SELECT 1, seq, hash FROM request_log WHERE seq = $1 \
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(pruned_to)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM request_log WHERE seq <= $1")
        .bind(pruned_to)
        .execute(&app.pool)
        .await
        .unwrap();
    let mut body = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    // The records the sockets held before the pruning came through, with no gap, then one
    // line that says the export is not whole: never a whole-looking export with the pruned
    // records missing from its middle.
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let (last, records) = lines.split_last().unwrap();
    assert_eq!(last["error"]["code"], "EXPORT_INCOMPLETE", "{last}");
    assert!(last.get("seq").is_none());
    let seqs: Vec<i64> = records.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs.first(), Some(&1));
    assert!(seqs.windows(2).all(|w| w[0] + 1 == w[1]), "no gap");
    assert!(*seqs.last().unwrap() < pruned_to);
}
