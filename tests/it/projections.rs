//! The projection runtime: no event skipped under concurrent writers with slow transactions,
//! rebuilds reproduce the read models row for row, status reporting, one runner per
//! projection across replicas with takeover, and the `herald` CLI against the same database.

use std::time::Duration;

use herald_domain::job::{JobEvent, JobKind, MaxAttempts, Metadata, Priority};
use herald_domain::ProjectId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::support::{test_config, TestApp};

/// Appends a `job.queued` event in a transaction that stays open for `hold` before committing,
/// so transactions that started later commit first.
async fn slow_append(database_url: String, project: ProjectId, hold: Duration) -> String {
    let mut conn = PgConnection::connect(&database_url).await.unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let event = JobEvent::Queued {
        project_id: project,
        kind: JobKind::parse("slow").unwrap(),
        input: json!({}),
        priority: Priority::default(),
        metadata: Metadata::default(),
        max_attempts: MaxAttempts::default(),
        input_files: vec![],
        at: chrono::Utc::now(),
    };
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('job', $1, 1, 'job.queued', '1', $2, '{\"actor_type\":\"system\",\"actor_id\":\"test\"}')",
    )
    .bind(&id)
    .bind(sqlx::types::Json(&event))
    .execute(&mut *tx)
    .await
    .unwrap();
    tokio::time::sleep(hold).await;
    tx.commit().await.unwrap();
    id
}

async fn read_models(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "jobs",
        "projects",
        "api_keys",
        "users",
        "project_members",
        "webhook_endpoints",
    ] {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(t)::text FROM {table} t ORDER BY 1"
        ))
        .fetch_all(&app.pool)
        .await
        .unwrap();
        out.extend(rows);
    }
    out
}

#[tokio::test]
async fn every_projection_sees_every_event_exactly_once_under_concurrent_slow_writers() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = app.database_url.clone();
        let hold = Duration::from_millis(100 + 60 * (i % 5));
        tasks.push(tokio::spawn(slow_append(
            url,
            ProjectId::from_uuid(project),
            hold,
        )));
    }
    let mut writers = Vec::new();
    for _ in 0..4 {
        let client = app.client.clone();
        let url = app.url("/api/v1/jobs");
        let key = key.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..25 {
                let response = client
                    .post(&url)
                    .header("X-API-Key", &key)
                    .json(&json!({"kind": "fast"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for writer in writers {
        writer.await.unwrap();
    }
    app.wait_for_projections().await;

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let job_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'job'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(job_events, 112);
    let checkpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, events_applied FROM projection_checkpoints ORDER BY name")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        checkpoints.len(),
        herald_api::all_projections(Default::default()).len()
    );
    for (name, applied) in checkpoints {
        assert_eq!(applied, total, "projection {name} read each event once");
    }
    let mismatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE j.version <> \
           (SELECT max(sequence) FROM events e WHERE e.aggregate_type = 'job' AND e.aggregate_id = j.id::text)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 112);
}

#[tokio::test]
async fn rebuilding_every_read_model_from_the_log_gives_identical_rows() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let worker = app.create_key(Some(project), &["jobs:work"]).await;
    for i in 0..6 {
        let id = app
            .submit_job(
                &key,
                json!({"kind": "render", "metadata": {"n": i.to_string()}}),
            )
            .await;
        if i % 2 == 0 {
            app.post(&format!("/api/v1/jobs/{id}/cancel"), &key, json!({}))
                .await;
        }
    }
    // A user with a role, so the users read model and its membership table have rows, and a
    // webhook endpoint (on a closed local port) so the projector's tables do.
    app.member_token(project, "editor").await;
    crate::webhooks::endpoint(&app, project, "http://127.0.0.1:9/hook", &["*"]).await;
    let leased = app.lease(&worker, json!({})).await.unwrap();
    let id = leased["id"].as_str().unwrap();
    app.post(
        &format!("/api/v1/jobs/{id}/complete"),
        &worker,
        json!({"result": {"ok": 1}}),
    )
    .await;
    app.wait_for_projections().await;
    let before = read_models(&app).await;
    let delivered_before: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(delivered_before > 0);

    for name in ["jobs", "projects", "api_keys", "users", "webhooks"] {
        let response = app
            .post(
                &format!("/api/v1/admin/projections/{name}/rebuild"),
                &app.admin_key,
                json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_projections().await;
    assert_eq!(read_models(&app).await, before);
    let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        deliveries, delivered_before,
        "a rebuild recorded deliveries again"
    );

    let listing: Value = app
        .get("/api/v1/admin/projections", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api_keys", "jobs", "projects", "users", "webhooks"]);
    assert!(listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lag"] == 0 && p["global_position"].as_i64() > Some(0)));
    let unknown = app
        .post(
            "/api/v1/admin/projections/nope/rebuild",
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_second_replica_takes_over_the_projections_when_the_first_stops() {
    let first = TestApp::spawn().await;
    let (_, key) = first.project_with_key(&["jobs:read", "jobs:write"]).await;
    first.wait_for_projections().await;
    let second = TestApp::start(test_config(&first.database_url)).await;
    let url = first.database_url.clone();
    first.stop().await;

    let id = second.submit_job(&key, json!({"kind": "render"})).await;
    let mut listed = false;
    for _ in 0..100 {
        let list: Value = second.get("/api/v1/jobs", &key).await.json().await.unwrap();
        if list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.to_string())
        {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        listed,
        "the second replica's runner took over the jobs projection"
    );
    assert_eq!(second.database_url, url);
}

pub fn herald_binary() -> std::path::PathBuf {
    let mut path = std::env::current_exe().unwrap();
    path.pop();
    if path.ends_with("deps") {
        path.pop();
    }
    path.join("herald")
}

/// Runs the real binary (asynchronously: the server under test shares this runtime).
pub async fn herald(database_url: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(herald_binary())
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("HERALD_API_KEY_PEPPER", crate::support::PEPPER)
        .env("HERALD_LOG", "warn")
        .output()
        .await
        .expect("run the herald binary (built by cargo test --workspace)")
}

#[tokio::test]
async fn the_cli_creates_projects_and_keys_and_rebuilds_while_the_server_runs() {
    let app = TestApp::spawn().await;
    let created = herald(&app.database_url, &["projects", "create", "From the CLI"]).await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let project: uuid::Uuid = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let key = herald(
        &app.database_url,
        &[
            "keys",
            "create",
            "--name",
            "ci",
            "--scopes",
            "jobs:read,jobs:write",
            "--project",
            &project.to_string(),
        ],
    )
    .await;
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let stdout = String::from_utf8(key.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the key on stdout");
    let key = stdout.trim();
    assert!(key.starts_with("hrld_live_"));
    let id = app.submit_job(key, json!({"kind": "render"})).await;

    let rebuilt = herald(&app.database_url, &["projections", "rebuild", "jobs"]).await;
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let list: Value = app.get("/api/v1/jobs", key).await.json().await.unwrap();
    assert_eq!(list["data"][0]["id"], id.to_string());

    let refused = herald(
        &app.database_url,
        &["keys", "create", "--name", "x", "--scopes", "jobs:read"],
    )
    .await;
    assert!(!refused.status.success(), "a project key needs --project");
}
