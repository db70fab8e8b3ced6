//! The per-IP `unauthenticated` budget: what it counts (refused or missing credentials, a key
//! used outside its IP allowlist, input refused before any handler checked the credentials),
//! and that such requests never spend the budget of the key they name.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::types::Uuid;

use crate::rate_limits::number;
use crate::support::{key_id, problem, TestApp};

#[tokio::test]
async fn refused_credentials_spend_the_ip_budget_and_never_the_named_keys() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.read_per_minute = 5;
        c.rate_limits.unauthenticated_per_minute = 3;
    })
    .await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    // The right key id, a wrong secret, a matching checksum: refused after the lookup.
    let forged = forge(&key);
    assert!(herald_domain::api_key::ApiKeyToken::parse(&forged).is_ok());
    for _ in 0..3 {
        assert_eq!(
            app.get("/api/v1/jobs", &forged).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let blocked = app.get("/api/v1/jobs", &forged).await;
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        problem(blocked).await["violated-policies"],
        json!(["unauthenticated"])
    );
    let genuine = app.get("/api/v1/jobs", &key).await;
    assert_eq!(genuine.status(), StatusCode::OK);
    assert_eq!(
        number(&genuine, "x-ratelimit-remaining"),
        4,
        "refused requests spent the key's budget"
    );
    let body: Value = genuine.json().await.unwrap();
    assert!(body["data"].is_array());
}

#[tokio::test]
async fn requests_without_any_credentials_spend_the_ip_budget_too() {
    let app = TestApp::spawn_with(|c| c.rate_limits.unauthenticated_per_minute = 3).await;
    let anonymous = || app.client.get(app.url("/api/v1/jobs")).send();
    for _ in 0..3 {
        let refused = anonymous().await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(problem(refused).await["code"], "UNAUTHENTICATED");
    }
    let blocked = anonymous().await.unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(number(&blocked, "retry-after") >= 1);
    assert_eq!(
        problem(blocked).await["violated-policies"],
        json!(["unauthenticated"])
    );
    // The same IP budget: a forged key is refused with 429 as well now.
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    assert_eq!(
        app.get("/api/v1/jobs", &forge(&key)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_used_outside_its_allowlist_spends_the_ip_budget_not_the_keys() {
    let app = TestApp::spawn_with(|c| c.rate_limits.unauthenticated_per_minute = 2).await;
    let project = app.create_project("office").await;
    let created: Value = app
        .post(
            "/api/v1/api-keys",
            &app.admin_key,
            json!({"name": "office", "project_id": project, "scopes": ["jobs:read"],
                   "ip_allowlist": ["192.0.2.0/24"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(app.get("/api/v1/jobs", key).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // Each attempt is recorded under the key and its project, so a key tried from elsewhere
    // is found by `key_id`.
    let id = created["id"].as_str().unwrap();
    let found: Value = app
        .get(
            &format!("/api/v1/audit/requests?key_id={id}"),
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    let seen: Vec<(i64, &str)> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_i64().unwrap(),
                r["project_id"].as_str().unwrap(),
            )
        })
        .collect();
    let project = project.to_string();
    assert_eq!(
        seen,
        [(429, &*project), (403, &project), (403, &project)],
        "{found}"
    );
}

#[tokio::test]
async fn input_refused_before_any_handler_spends_the_ip_budget_not_the_keys() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.write_per_minute = 5;
        c.rate_limits.unauthenticated_per_minute = 5;
        c.http.max_body_bytes = 1024;
    })
    .await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let submit = |body: &str| {
        app.client
            .post(app.url("/api/v1/jobs"))
            .header("X-API-Key", &key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    };
    let malformed = || submit("{not json").send();
    let first = malformed().await.unwrap();
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(first).await["code"], "INVALID_BODY");
    let unknown = app.get("/api/v1/no-such-route", &key).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let huge = format!(r#"{{"kind": "{}"}}"#, "k".repeat(2000));
    let too_large = submit(&huge).send().await.unwrap();
    assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bad_key = submit(r#"{"kind": "k"}"#)
        .header("Idempotency-Key", "")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(bad_key).await["code"], "INVALID_IDEMPOTENCY_KEY");
    assert_eq!(malformed().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let blocked = malformed().await.unwrap();
    assert_eq!(blocked.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(number(&blocked, "retry-after") >= 1);
    assert_eq!(
        problem(blocked).await["violated-policies"],
        json!(["unauthenticated"])
    );
    // The 429 still names the key whose credentials came with it, as the refusals before it.
    let named: Vec<(i32, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "SELECT status, actor_id, project_id FROM request_log \
          WHERE route = '/api/v1/jobs' AND method = 'POST' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let id = Some(key_id(&key).to_owned());
    assert_eq!(named.last().unwrap(), &(429, id.clone(), Some(project)));
    assert!(
        named.iter().all(|n| (&n.1, n.2) == (&id, Some(project))),
        "{named:?}"
    );
    // Nothing was appended, and the key's own budget is untouched.
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'job.queued'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, 0);
    let created = app.post("/api/v1/jobs", &key, json!({"kind": "ok"})).await;
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    assert_eq!(number(&created, "x-ratelimit-remaining"), 4);
}

/// `key` with one character of its secret changed and the checksum made to match again, so it
/// is refused only after the key it names has been looked up (CRC32 of the rest, as six base62
/// characters, as `herald_domain::api_key::token` documents the format).
fn forge(key: &str) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = &key[..key.len() - 6];
    let (head, last) = body.split_at(body.len() - 1);
    let body = format!("{head}{}", if last == "x" { "y" } else { "x" });
    let mut n = crc32fast::hash(body.as_bytes());
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    format!("{body}{}", String::from_utf8(sum.to_vec()).unwrap())
}
