//! The request log over HTTP: every call is recorded (401, 403, 404 and 429 included) without
//! secrets or query strings, the list filters, the hash chain catches an edited and a deleted
//! record (through the API and `herald audit verify`), a server killed under load leaves a
//! record for every response its clients received, and the writer counts each call in flight
//! from when its body has arrived until it is answered.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::TestApp;

async fn records(app: &TestApp, query: &str) -> Vec<Value> {
    let response = app
        .get(
            &format!("/api/v1/audit/requests?limit=100{query}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn every_call_is_recorded_with_its_outcome_and_never_a_secret() {
    let app = TestApp::spawn_with(|c| c.rate_limits.write_per_minute = 1).await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let key_id = key.split('_').nth(2).unwrap().to_owned();
    let ok = app.post("/api/v1/jobs", &key, json!({"kind": "k"})).await;
    let request_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        app.post("/api/v1/jobs", &key, json!({"kind": "k"}))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.get("/api/v1/jobs?secret=hunter2", "hrld_live_nope")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/v1/api-keys", &key).await.status(),
        StatusCode::FORBIDDEN
    );
    let missing = format!("/api/v1/jobs/{}", uuid::Uuid::now_v7());
    assert_eq!(
        app.get(&missing, &key).await.status(),
        StatusCode::NOT_FOUND
    );

    let mine = records(&app, &format!("&key_id={key_id}")).await;
    let outcomes: Vec<(&str, i64)> = mine
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("client_error", 404),
            ("denied", 403),
            ("rate_limited", 429),
            ("success", 202)
        ]
    );
    let submitted = &mine[3];
    assert_eq!(submitted["request_id"], request_id);
    assert_eq!(submitted["route"], "/api/v1/jobs");
    assert_eq!(submitted["method"], "POST");
    assert_eq!(submitted["actor_type"], "api_key");
    assert!(
        submitted["request_bytes"].as_i64() > Some(0)
            && submitted["response_bytes"].as_i64() > Some(0)
    );
    assert_eq!(mine[0]["route"], "/api/v1/jobs/{id}");
    assert_eq!(mine[0]["error_code"], "JOB_NOT_FOUND");
    assert_eq!(mine[2]["error_code"], "RATE_LIMIT_EXCEEDED");
    let refused = records(&app, "&status=401").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0]["path"], "/api/v1/jobs",
        "the query string was recorded"
    );
    assert!(refused[0]["actor_id"].is_null());
    let everything = serde_json::to_string(&records(&app, "").await).unwrap();
    assert!(!everything.contains(&key) && !everything.contains("hunter2"));
}

/// What `GET /api/v1/audit/verify` answers the admin.
async fn verified(app: &TestApp) -> Value {
    let response = app.get("/api/v1/audit/verify", &app.admin_key).await;
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_edited_and_a_deleted_record_break_the_chain() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    for _ in 0..6 {
        app.get("/api/v1/jobs", &key).await;
    }
    let intact = verified(&app).await;
    assert_eq!(intact["ok"], true, "{intact}");
    assert!(intact["checked"].as_i64() >= Some(6));
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
    // A reversed range is refused, by the command as by the route, not reported intact.
    let reversed = [
        "--from",
        "2026-12-07T00:00:00Z",
        "--to",
        "2026-12-06T00:00:00Z",
    ];
    let cli = crate::projections::herald(
        &app.database_url,
        &[&["audit", "verify"][..], &reversed[..]].concat(),
    )
    .await;
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("must not be after --to"));
    let refused = app
        .get(
            "/api/v1/audit/verify?from=2026-12-07T00:00:00Z&to=2026-12-06T00:00:00Z",
            &app.admin_key,
        )
        .await;
    assert_eq!(refused.status(), 400);

    sqlx::query("UPDATE request_log SET status = 500 WHERE seq = 3")
        .execute(&app.pool)
        .await
        .unwrap();
    let edited = verified(&app).await;
    assert_eq!(
        (edited["ok"].clone(), edited["first_broken_seq"].clone()),
        (json!(false), json!(3))
    );
    assert_eq!(edited["checked"], 2, "the records intact before the break");
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(!cli.status.success());
    let said = String::from_utf8_lossy(&cli.stdout);
    assert!(said.contains("broken at record 3"), "{said}");
    assert!(said.contains("(2 records intact before it)"), "{said}");

    sqlx::query("UPDATE request_log SET status = 200 WHERE seq = 3")
        .execute(&app.pool)
        .await
        .unwrap();
    // A missing value made empty (the record had no error code) is an edit too.
    let emptied = "UPDATE request_log SET error_code = '' WHERE seq = 4 AND error_code IS NULL";
    let done = sqlx::query(emptied).execute(&app.pool).await.unwrap();
    assert_eq!(done.rows_affected(), 1);
    let edited = verified(&app).await;
    assert_eq!(edited["first_broken_seq"], 4, "{edited}");
    sqlx::query("UPDATE request_log SET error_code = NULL WHERE seq = 4")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM request_log WHERE seq = 5")
        .execute(&app.pool)
        .await
        .unwrap();
    let deleted = verified(&app).await;
    assert_eq!(
        (deleted["ok"].clone(), deleted["first_broken_seq"].clone()),
        (json!(false), json!(5)),
        "{deleted}"
    );
    let cli = crate::projections::herald(&app.database_url, &["audit", "verify"]).await;
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stdout).contains("broken at record 5"));
}

#[tokio::test]
async fn a_server_killed_under_load_has_a_record_of_every_answer_it_gave() {
    let url = crate::support::db::fresh_database().await;
    let admin = crate::projections::herald(
        &url,
        &["keys", "create", "--name", "admin", "--scopes", "admin"],
    )
    .await;
    let admin = String::from_utf8(admin.stdout).unwrap().trim().to_owned();
    let project = crate::projections::herald(&url, &["projects", "create", "killed"]).await;
    let project = String::from_utf8(project.stdout).unwrap().trim().to_owned();
    let submitter = crate::projections::herald(
        &url,
        &[
            "keys",
            "create",
            "--name",
            "submitter",
            "--scopes",
            "jobs:write",
        ]
        .into_iter()
        .chain(["--project", &project])
        .collect::<Vec<_>>(),
    )
    .await;
    let submitter = String::from_utf8(submitter.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let port = crate::api_keys::free_port();
    let mut server = tokio::process::Command::new(crate::projections::herald_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &url)
        .env("HERALD_API_KEY_PEPPER", crate::support::PEPPER)
        .env("HERALD_LOG", "warn")
        .env("HERALD_RATE_LIMITS__READ_PER_MINUTE", "1000000")
        .env("HERALD_RATE_LIMITS__WRITE_PER_MINUTE", "1000000")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if crate::support::http_client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Eight clients, four reading and four submitting jobs as fast as they can (submissions'
    // records share commits with their events); the server is killed while they do.
    let mut clients = Vec::new();
    let counts = std::sync::Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    for n in 0..8 {
        let (base, admin, submitter) = (base.clone(), admin.clone(), submitter.clone());
        let counts = counts.clone();
        clients.push(tokio::spawn(async move {
            let client = crate::support::http_client();
            let mut answered = Vec::new();
            let mut jobs = Vec::new();
            loop {
                let request = if n % 2 == 0 {
                    client
                        .get(format!("{base}/api/v1/projects"))
                        .header("X-API-Key", &admin)
                } else {
                    client
                        .post(format!("{base}/api/v1/jobs"))
                        .header("X-API-Key", &submitter)
                        .json(&json!({"kind": "killed"}))
                };
                let Ok(response) = request.send().await else {
                    break;
                };
                let id = response.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                answered.push(id);
                counts.0.fetch_add(1, Ordering::Relaxed);
                if response.status() == StatusCode::ACCEPTED {
                    let Ok(job) = response.json::<Value>().await else {
                        break;
                    };
                    jobs.push(job["id"].as_str().unwrap().to_owned());
                    counts.1.fetch_add(1, Ordering::Relaxed);
                }
            }
            (answered, jobs)
        }));
    }
    // Under load for at least 1.5 s, and until enough has been answered to mean something (a
    // slow machine takes longer to get there).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500)
        || (counts.0.load(Ordering::Relaxed) <= 50 || counts.1.load(Ordering::Relaxed) <= 10)
            && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().await.unwrap();
    let (mut answered, mut jobs) = (BTreeSet::new(), BTreeSet::new());
    for client in clients {
        let (ids, submitted) = client.await.unwrap();
        answered.extend(ids);
        jobs.extend(submitted);
    }
    assert!(
        answered.len() > 50 && jobs.len() > 10,
        "the load was too light to mean anything: {} answers, {} jobs",
        answered.len(),
        jobs.len()
    );
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let recorded: Vec<String> = sqlx::query_scalar("SELECT request_id FROM request_log")
        .fetch_all(&pool)
        .await
        .unwrap();
    let recorded: BTreeSet<String> = recorded.into_iter().collect();
    let missing: Vec<&String> = answered.difference(&recorded).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answers have no record",
        missing.len(),
        answered.len()
    );
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT aggregate_id FROM events WHERE aggregate_type = 'job'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let stored: BTreeSet<String> = stored.into_iter().collect();
    assert!(jobs.is_subset(&stored), "every job answered 202 was stored");
    // The server's writer commits event batches with the records queued beside them.
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e \
          WHERE EXISTS (SELECT 1 FROM request_log r WHERE r.xmin::text = e.xmin::text)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(shared > 0, "no event shared a commit with a request record");
}
