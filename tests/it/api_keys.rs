//! The API key lifecycle over HTTP: create (secret shown once), list and read (never the
//! secret), update with no scope escalation, rotation with a grace period, revocation seen at
//! once here and within a second by another `herald serve` process, history, tenancy.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{problem, TestApp, PEPPER};

async fn create(app: &TestApp, caller: &str, body: Value) -> Value {
    let response = app.post("/api/v1/api-keys", caller, body).await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "{}",
        response.text().await.unwrap()
    );
    response.json().await.unwrap()
}

async fn patch(app: &TestApp, caller: &str, id: &str, body: Value) -> reqwest::Response {
    app.request(Method::PATCH, &format!("/api/v1/api-keys/{id}"), caller)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_is_shown_once_and_listed_without_its_secret() {
    let app = TestApp::spawn().await;
    let (project, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let created = create(
        &app,
        &manager,
        json!({"name": "ci", "description": "nightly", "scopes": ["jobs:read"], "expires_in_days": 30,
               "ip_allowlist": ["127.0.0.1", "10.0.0.0/8"]}),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with(created["start"].as_str().unwrap()));
    assert_eq!(created["project_id"], project.to_string());
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["ip_allowlist"],
        json!(["127.0.0.1/32", "10.0.0.0/8"])
    );
    assert_eq!(
        created["rate_limit"],
        json!({"read_per_minute": null, "write_per_minute": null, "daily_quota": null}),
        "the server defaults"
    );
    assert!(created["expires_at"].is_string());

    assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    app.state.verifier.flush_usage(&app.pool).await.unwrap();
    let fetched = app.get(&format!("/api/v1/api-keys/{id}"), &manager).await;
    let text = fetched.text().await.unwrap();
    assert!(!text.contains(&key) && !text.contains("key_hash"), "{text}");
    let fetched: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(fetched["usage_count"], 1);
    assert!(fetched["last_used_at"].is_string());

    app.wait_for_projections().await;
    let listed = app
        .get("/api/v1/api-keys", &manager)
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(&key) && !listed.contains("key_hash"));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "the manager key and the new one");
    assert!(ids.contains(&id.as_str()));
}

/// A description cleared with `""` stays cleared: for the next change (which loads the key from
/// the log) and in the read model (which reads the same event).
#[tokio::test]
async fn a_cleared_description_stays_cleared() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let created = create(
        &app,
        &manager,
        json!({"name": "ci", "description": "nightly", "scopes": ["jobs:read"]}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    for (body, description) in [
        (json!({"description": ""}), Value::Null),
        (json!({"name": "renamed"}), Value::Null),
        (json!({"description": "weekly"}), json!("weekly")),
        (json!({"name": "again"}), json!("weekly")),
    ] {
        let changed = patch(&app, &manager, id, body.clone()).await;
        assert_eq!(changed.status(), StatusCode::OK, "{body}");
        let changed: Value = changed.json().await.unwrap();
        assert_eq!(changed["description"], description, "{body}");
        app.wait_for_projections().await;
        let read: Value = app
            .get(&format!("/api/v1/api-keys/{id}"), &manager)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(read["description"], description, "read after {body}");
    }
}

#[tokio::test]
async fn a_key_never_grants_more_than_its_caller_holds() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let wider = app
        .post(
            "/api/v1/api-keys",
            &manager,
            json!({"name": "x", "scopes": ["jobs:read", "jobs:write"]}),
        )
        .await;
    assert_eq!(wider.status(), StatusCode::FORBIDDEN);
    assert!(problem(wider).await["detail"]
        .as_str()
        .unwrap()
        .contains("jobs:write"));
    let admin = app
        .post(
            "/api/v1/api-keys",
            &manager,
            json!({"name": "x", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);

    let narrow = create(
        &app,
        &manager,
        json!({"name": "r", "scopes": ["jobs:read", "keys:read"]}),
    )
    .await;
    let id = narrow["id"].as_str().unwrap();
    let widened = patch(
        &app,
        &manager,
        id,
        json!({"scopes": ["jobs:read", "keys:write"]}),
    )
    .await;
    assert_eq!(widened.status(), StatusCode::FORBIDDEN);
    let narrowed = patch(
        &app,
        &manager,
        id,
        json!({"scopes": ["jobs:read"], "name": "renamed"}),
    )
    .await;
    assert_eq!(narrowed.status(), StatusCode::OK);
    let narrowed: Value = narrowed.json().await.unwrap();
    assert_eq!(narrowed["scopes"], json!(["jobs:read"]));
    assert_eq!(narrowed["name"], "renamed");
    let by_admin = patch(
        &app,
        &app.admin_key,
        id,
        json!({"scopes": ["jobs:read", "jobs:write"]}),
    )
    .await;
    assert_eq!(by_admin.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_key_keeps_working_until_its_grace_period_ends() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let old = create(
        &app,
        &manager,
        json!({"name": "worker", "scopes": ["jobs:read"]}),
    )
    .await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    let rotated = app
        .post(
            &format!("/api/v1/api-keys/{old_id}/rotate"),
            &manager,
            json!({"grace_period_seconds": 5}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::CREATED);
    let new: Value = rotated.json().await.unwrap();
    let new_key = new["key"].as_str().unwrap();
    assert_eq!(new["rotated_from"], old_id);
    assert_eq!(new["scopes"], json!(["jobs:read"]));
    assert_eq!(
        app.get("/api/v1/jobs", old_key).await.status(),
        StatusCode::OK,
        "old key during grace"
    );
    assert_eq!(
        app.get("/api/v1/jobs", new_key).await.status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(5100)).await;
    assert_eq!(
        app.get("/api/v1/jobs", old_key).await.status(),
        StatusCode::UNAUTHORIZED,
        "old key after grace"
    );
    assert_eq!(
        app.get("/api/v1/jobs", new_key).await.status(),
        StatusCode::OK
    );
    let again = app
        .post(
            &format!("/api/v1/api-keys/{old_id}/rotate"),
            &manager,
            json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let too_long = app
        .post(
            &format!("/api/v1/api-keys/{}/rotate", new["id"].as_str().unwrap()),
            &manager,
            json!({"grace_period_seconds": 700000}),
        )
        .await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);

    let history: Value = app
        .get(&format!("/api/v1/api-keys/{old_id}/history"), &manager)
        .await
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["api_key.created", "api_key.rotated"]);
    assert!(history["data"][0]["data"].get("key_hash").is_none());
}

/// A free local port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn revocation_is_seen_at_once_here_and_through_notify_by_another_server_process() {
    let app = TestApp::spawn().await;
    let (_, manager) = app
        .project_with_key(&["keys:read", "keys:write", "jobs:read"])
        .await;
    let created = create(
        &app,
        &manager,
        json!({"name": "doomed", "scopes": ["jobs:read"]}),
    )
    .await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap().to_owned(),
    );

    let port = free_port();
    let mut replica = tokio::process::Command::new(crate::projections::herald_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &app.database_url)
        .env("HERALD_API_KEY_PEPPER", PEPPER)
        .env("HERALD_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read its logs as they come: debug logging fills a pipe nobody reads within seconds, and
    // the replica would then stall on writing them.
    let mut stderr = replica.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut text = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stderr, &mut text)
            .await
            .unwrap();
        text
    });
    let other = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(format!("{other}/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the second herald serve process came up");
    let on_other = |key: String| {
        let url = format!("{other}/api/v1/jobs");
        async move {
            crate::support::http_client()
                .get(url)
                .header("X-API-Key", key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Both replicas have the key cached.
    assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    assert_eq!(on_other(key.clone()).await, StatusCode::OK);
    // A query-string key is ignored (and must not reach the logs either).
    let query = reqwest::get(format!("{other}/api/v1/jobs?api_key={key}"))
        .await
        .unwrap();
    assert_eq!(query.status(), StatusCode::UNAUTHORIZED);

    let revoked = app
        .post(
            &format!("/api/v1/api-keys/{id}/revoke"),
            &manager,
            json!({}),
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    assert_eq!(
        app.get("/api/v1/jobs", &key).await.status(),
        StatusCode::UNAUTHORIZED,
        "same replica, next request"
    );
    let mut refused_after = None;
    // The other replica hears of it through NOTIFY, usually within milliseconds; a loaded
    // machine is given 10 s (its cache has no expiry, so only the notice can refuse the key).
    while revoked_at.elapsed() < Duration::from_secs(10) {
        if on_other(key.clone()).await == StatusCode::UNAUTHORIZED {
            refused_after = Some(revoked_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = refused_after.expect("the other replica refused the revoked key");
    eprintln!("the other replica refused the revoked key after {refused_after:?}");

    nix_terminate(&replica);
    replica.wait().await.unwrap();
    let logs = logs.await.unwrap();
    let logs = String::from_utf8_lossy(&logs);
    assert!(
        logs.contains("request"),
        "the replica logged its requests at debug level"
    );
    for secret in [&key, &manager, &app.admin_key] {
        assert!(
            !logs.contains(secret.as_str()),
            "a key appeared in the logs"
        );
    }
    let again = app
        .post(
            &format!("/api/v1/api-keys/{id}/revoke"),
            &manager,
            json!({}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

fn nix_terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("the child is running");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn another_projects_keys_are_not_found() {
    let app = TestApp::spawn().await;
    let (_, manager_a) = app.project_with_key(&["keys:read", "keys:write"]).await;
    let (_, manager_b) = app.project_with_key(&["keys:read", "keys:write"]).await;
    let key_a = create(
        &app,
        &manager_a,
        json!({"name": "a", "scopes": ["keys:read"]}),
    )
    .await;
    let id = key_a["id"].as_str().unwrap();
    for path in ["", "/history"] {
        let response = app
            .get(&format!("/api/v1/api-keys/{id}{path}"), &manager_b)
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    for action in ["revoke", "rotate"] {
        let response = app
            .post(
                &format!("/api/v1/api-keys/{id}/{action}"),
                &manager_b,
                json!({}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        patch(&app, &manager_b, id, json!({"name": "mine"}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    app.wait_for_projections().await;
    let listed: Value = app
        .get("/api/v1/api-keys", &manager_b)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != id));
    // Still intact for its own project.
    let own: Value = app
        .get(&format!("/api/v1/api-keys/{id}"), &manager_a)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["status"], "active");
}

#[tokio::test]
async fn key_uses_a_failed_flush_could_not_write_are_written_by_the_next() {
    let app = TestApp::spawn().await;
    let (_, first) = app.project_with_key(&["jobs:read"]).await;
    let (_, second) = app.project_with_key(&["jobs:read"]).await;
    for key in [&first, &first, &second] {
        assert_eq!(app.get("/api/v1/jobs", key).await.status(), StatusCode::OK);
    }
    // The database does not answer this flush (the periodic one may have been first, when
    // there is nothing left for this one to lose)...
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy("postgres://herald@127.0.0.1:9/herald")
        .unwrap();
    let _ = app.state.verifier.flush_usage(&unreachable).await;
    // ...and the next one writes every key's uses.
    app.state.verifier.flush_usage(&app.pool).await.unwrap();
    for (key, uses) in [(&first, 2), (&second, 1)] {
        let id = key.split('_').nth(2).unwrap();
        let fetched: Value = app
            .get(&format!("/api/v1/api-keys/{id}"), &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fetched["usage_count"], uses, "{fetched}");
    }
}

#[tokio::test]
async fn key_uses_of_a_flush_given_up_while_it_waits_are_written_by_the_next() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    // The table is locked before the uses (which do not touch it), so the server's own flush
    // cannot write them first: this flush waits and is given up, as the flusher gives up one
    // that PostgreSQL does not answer...
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_key_usage IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    }
    let flush = app.state.verifier.flush_usage(&app.pool);
    let cut = tokio::time::timeout(Duration::from_millis(300), flush).await;
    assert!(cut.is_err(), "the flush waited on the lock");
    lock.commit().await.unwrap();
    // ...and the next one writes the uses it held, and they are not written again.
    app.state.verifier.flush_usage(&app.pool).await.unwrap();
    app.state.verifier.flush_usage(&app.pool).await.unwrap();
    let id = key.split('_').nth(2).unwrap();
    let fetched: Value = app
        .get(&format!("/api/v1/api-keys/{id}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched["usage_count"], 3, "{fetched}");
}

#[tokio::test]
async fn rotations_that_lose_a_race_leave_no_usable_key() {
    let app = TestApp::spawn().await;
    let (_, manager) = app.project_with_key(&["keys:read", "keys:write"]).await;
    // Rotations of one key at once: one wins; the others' successors, if they were made, are
    // revoked, so exactly one new key can be used.
    let old = create(
        &app,
        &manager,
        json!({"name": "raced", "scopes": ["keys:read"]}),
    )
    .await;
    let old_id = old["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/api-keys/{old_id}/rotate");
    let answers =
        futures::future::join_all((0..4).map(|_| app.post(&path, &manager, json!({})))).await;
    let won: Vec<Value> = futures::future::join_all(
        answers
            .into_iter()
            .filter(|a| a.status() == StatusCode::CREATED)
            .map(|a| a.json::<Value>()),
    )
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(won.len(), 1, "{won:?}");
    app.wait_for_projections().await;
    let successors: Vec<(String, bool)> = sqlx::query_as(
        "SELECT id, revoked_at IS NULL FROM api_keys WHERE rotated_from = $1 ORDER BY id",
    )
    .bind(&old_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let usable: Vec<&String> = successors
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(usable, [won[0]["id"].as_str().unwrap()], "{successors:?}");
}

#[tokio::test]
async fn a_key_cannot_give_a_key_more_reach_than_its_own() {
    let app = TestApp::spawn().await;
    let project = app.create_project("reach").await;
    // The tests' client is 127.0.0.1: inside the restricted key's allowlist.
    let restricted = create(
        &app,
        &app.admin_key,
        json!({"name": "ci", "project_id": project, "scopes": ["keys:read", "keys:write"],
               "ip_allowlist": ["127.0.0.0/8"], "expires_in_days": 2}),
    )
    .await;
    let restricted = restricted["key"].as_str().unwrap().to_owned();
    let attempt = |body: Value| app.post("/api/v1/api-keys", &restricted, body);
    for (wider, why) in [
        (
            json!({"name": "a", "scopes": ["keys:read"], "expires_in_days": 1}),
            "anywhere",
        ),
        (
            json!({"name": "b", "scopes": ["keys:read"], "ip_allowlist": ["10.0.0.0/8"], "expires_in_days": 1}),
            "elsewhere",
        ),
        (
            json!({"name": "c", "scopes": ["keys:read"], "ip_allowlist": ["127.0.0.1"]}),
            "for ever",
        ),
        (
            json!({"name": "d", "scopes": ["keys:read"], "ip_allowlist": ["127.0.0.1"], "expires_in_days": 3}),
            "past its expiry",
        ),
    ] {
        let refused = attempt(wider).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{why}");
    }
    let within = attempt(json!({"name": "e", "scopes": ["keys:read"],
                                "ip_allowlist": ["127.0.0.1"], "expires_in_days": 1}))
    .await;
    assert_eq!(within.status(), StatusCode::CREATED);
    let within: Value = within.json().await.unwrap();
    let path = format!("/api/v1/api-keys/{}", within["id"].as_str().unwrap());
    let patch = |body: Value| {
        app.request(Method::PATCH, &path, &restricted)
            .json(&body)
            .send()
    };
    let widened = patch(json!({"ip_allowlist": []})).await.unwrap();
    assert_eq!(widened.status(), StatusCode::FORBIDDEN);
    let narrowed = patch(json!({"ip_allowlist": ["127.0.0.2"]})).await.unwrap();
    assert_eq!(narrowed.status(), StatusCode::OK);
    // An admin is not held to it.
    let unbounded = app
        .post(
            "/api/v1/api-keys",
            &app.admin_key,
            json!({"name": "f", "project_id": project, "scopes": ["keys:read"]}),
        )
        .await;
    assert_eq!(unbounded.status(), StatusCode::CREATED);
}
