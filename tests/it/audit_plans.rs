//! How a page of the request log is found once the log is large: a project's records (the
//! page a project-bound caller reads, or `project=`) come from `request_log_by_project` and a
//! caller's from `request_log_by_actor`, not from a walk back through every tenant's records.
//! The plan is read from PostgreSQL for the listing's own statement, with its values bound as
//! the route binds them, on a log of 20,000 records where the asked project holds 20.

use sqlx::types::Uuid;

use crate::support::TestApp;

/// The plan PostgreSQL makes for one page, with the project filter (`$2`), the caller's
/// visible projects (`$10`) and the actor filter (`$1`) as given.
async fn plan(
    app: &TestApp,
    actor: Option<&str>,
    project: Option<Uuid>,
    visible: Option<Vec<Uuid>>,
) -> String {
    let lines: Vec<String> =
        sqlx::query_scalar(&format!("EXPLAIN {}", herald_api::audit::LIST_SQL))
            .persistent(false)
            .bind(actor)
            .bind(project)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i32>)
            .bind(None::<String>)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
            .bind(None::<chrono::DateTime<chrono::Utc>>)
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
    sqlx::query(
        "INSERT INTO request_log (seq, occurred_at, request_id, actor_type, actor_id, project_id, \
           route, method, path, status, latency_us, request_bytes, response_bytes, client_ip, \
           user_agent, outcome, error_code, hash) \
         SELECT m.seq + g, now(), 'req_' || g, 'api_key', 'key_' || (g % 1000), \
                CASE WHEN g % 1000 = 0 THEN $1 ELSE ($2::uuid[])[1 + g % 50] END, \
                '/api/v1/jobs/{id}', 'GET', '/api/v1/jobs/x', 200, 100, 0, 100, '127.0.0.1', \
                'curl', 'success', NULL, repeat('0', 64) \
           FROM generate_series(1, 20000) g, (SELECT coalesce(max(seq), 0) AS seq FROM request_log) m",
    )
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
