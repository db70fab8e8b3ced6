//! Walks the roles table of `docs/AUTHENTICATION.md`: for every row, the endpoint is called as
//! a key holding exactly the row's scope (allowed), a key without it (403), and a user of each
//! project role (allowed or 403, as the row says). "Allowed" means neither 401 nor 403: the
//! request may still fail for its own reasons (a 409 for approving a queued job is fine).
//! Then the per-project checks that a table cannot show: a member's role in one project gives
//! nothing in another.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::TestApp;

struct Row {
    method: Method,
    path: String,
    scope: String,
    roles: [(String, bool); 3],
}

fn table() -> Vec<Row> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/AUTHENTICATION.md"
    ))
    .unwrap();
    let start = doc
        .find("<!-- roles-table:start -->")
        .expect("table start marker");
    let end = doc
        .find("<!-- roles-table:end -->")
        .expect("table end marker");
    let rows: Vec<Row> = doc[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            let (method, path) = cells[0].split_once(' ').expect("METHOD /path");
            let role = |i: usize, name: &str| (name.to_owned(), cells[i] == "yes");
            Row {
                method: method.parse().unwrap(),
                path: path.to_owned(),
                scope: cells[1].to_owned(),
                roles: [role(2, "owner"), role(3, "editor"), role(4, "viewer")],
            }
        })
        .collect();
    assert!(
        rows.len() >= 25,
        "the roles table lost rows: {}",
        rows.len()
    );
    rows
}

/// Fresh resources for one call, so no call depends on what an earlier one did.
async fn path_for(app: &TestApp, project: Uuid, row: &Row) -> String {
    let mut path = row
        .path
        .replace("{project}", &project.to_string())
        .replace("{name}", "projects");
    if path.contains("{job}") {
        let job = app
            .submit_job(
                &app.admin_key,
                json!({"kind": "roles.check", "project_id": project}),
            )
            .await;
        path = path.replace("{job}", &job.to_string());
    }
    if path.contains("{key}") {
        let scopes = if row.scope.starts_with("keys:") {
            row.scope.as_str()
        } else {
            "jobs:read"
        };
        let key = app.create_key(Some(project), &[scopes]).await;
        let id = key.split('_').nth(2).unwrap().to_owned();
        path = path.replace("{key}", &id);
    }
    if path.contains("{webhook}") {
        let (id, _) =
            crate::webhooks::endpoint(app, project, "http://127.0.0.1:9/hook", &["webhook.ping"])
                .await;
        path = path.replace("{webhook}", &id.to_string());
    }
    if path.contains("{user}") {
        let user = app
            .create_user(
                &format!("u-{}@example.com", Uuid::new_v4().simple()),
                crate::support::PASSWORD,
                false,
            )
            .await;
        if row.method == Method::DELETE {
            let put = app
                .request(
                    Method::PUT,
                    &format!("/api/v1/projects/{project}/members/{user}"),
                    &app.admin_key,
                )
                .json(&json!({"role": "viewer"}))
                .send()
                .await
                .unwrap();
            assert_eq!(put.status(), StatusCode::OK);
        }
        path = path.replace("{user}", &user.to_string());
    }
    path
}

fn body_for(row: &Row, project: Uuid) -> Option<Value> {
    let last = row.path.rsplit('/').next().unwrap();
    let body = match (row.method.as_str(), last) {
        ("POST", "jobs") => json!({"kind": "roles.check", "project_id": project}),
        ("PATCH", "metadata") => json!({"metadata": {"checked": "yes"}}),
        ("POST", "approve" | "reject") => json!({"comment": "looked at it"}),
        ("POST", "lease") => json!({"kinds": ["roles.check"]}),
        ("POST", "heartbeat") => json!({"progress": 10}),
        ("POST", "complete") => json!({"result": {}}),
        ("POST", "fail") => json!({"error": "broken", "retryable": false}),
        ("POST", "api-keys") => {
            json!({"name": "made by a role", "scopes": ["keys:write"], "project_id": project})
        }
        ("PATCH", "{key}") => json!({"name": "renamed"}),
        ("POST", "rotate") => json!({"grace_period_seconds": 60}),
        ("PUT", "{user}") => json!({"role": "editor"}),
        ("PATCH", "{project}") => json!({"name": "renamed by a role"}),
        ("POST", "projects") => json!({"name": "made by a role"}),
        ("POST", "webhooks") => {
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["webhook.ping"], "project_id": project})
        }
        ("PATCH", "{webhook}") => json!({"description": "changed by a role"}),
        ("POST", "replay") => json!({"from_position": 0}),
        ("POST", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

async fn call(app: &TestApp, row: &Row, project: Uuid, auth: &Auth) -> StatusCode {
    let path = path_for(app, project, row).await;
    let mut request = app.client.request(row.method.clone(), app.url(&path));
    request = match auth {
        Auth::Key(key) => request.header("X-API-Key", key),
        Auth::User(token) => request.bearer_auth(token),
    };
    if let Some(body) = body_for(row, project) {
        request = request.json(&body);
    }
    request.send().await.unwrap().status()
}

enum Auth {
    Key(String),
    User(String),
}

fn refused(status: StatusCode) -> bool {
    status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED
}

#[tokio::test]
async fn every_row_of_the_roles_table_holds() {
    let app = TestApp::spawn().await;
    let project = app.create_project("roles").await;
    let mut tokens = Vec::new();
    for role in ["owner", "editor", "viewer"] {
        tokens.push(app.member_token(project, role).await);
    }
    let every_project_scope = [
        "jobs:read",
        "jobs:write",
        "jobs:work",
        "webhooks:read",
        "webhooks:write",
        "keys:read",
        "keys:write",
        "usage:read",
        "audit:read",
    ];
    let mut failures = Vec::new();
    for row in table() {
        let label = format!("{} {}", row.method, row.path);
        let (with, without) = match row.scope.as_str() {
            "any" => (
                Some(app.create_key(Some(project), &["jobs:read"]).await),
                None,
            ),
            "admin" => (
                Some(app.admin_key.clone()),
                Some(app.create_key(Some(project), &every_project_scope).await),
            ),
            // The event log: any scope that reads a resource shows that resource's events.
            "a read scope" => (
                Some(app.create_key(Some(project), &["jobs:read"]).await),
                Some(app.create_key(Some(project), &["jobs:work"]).await),
            ),
            scope => {
                let other = if scope == "jobs:read" {
                    "usage:read"
                } else {
                    "jobs:read"
                };
                (
                    Some(app.create_key(Some(project), &[scope]).await),
                    Some(app.create_key(Some(project), &[other]).await),
                )
            }
        };
        if let Some(key) = with {
            let status = call(&app, &row, project, &Auth::Key(key)).await;
            if refused(status) {
                failures.push(format!("{label}: a key with `{}` got {status}", row.scope));
            }
        }
        if let Some(key) = without {
            let status = call(&app, &row, project, &Auth::Key(key)).await;
            if status != StatusCode::FORBIDDEN {
                failures.push(format!(
                    "{label}: a key without `{}` got {status}",
                    row.scope
                ));
            }
        }
        for ((role, allowed), token) in row.roles.iter().zip(&tokens) {
            let status = call(&app, &row, project, &Auth::User(token.clone())).await;
            let ok = if *allowed {
                !refused(status)
            } else {
                status == StatusCode::FORBIDDEN
            };
            if !ok {
                failures.push(format!(
                    "{label}: {role} got {status}, table says {}",
                    if *allowed { "yes" } else { "no" }
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the roles table does not hold:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_role_in_one_project_gives_nothing_in_another() {
    let app = TestApp::spawn().await;
    let (mine, theirs) = (
        app.create_project("mine").await,
        app.create_project("theirs").await,
    );
    let owner = app.member_token(mine, "owner").await;
    let their_job = app
        .submit_job(&app.admin_key, json!({"kind": "k", "project_id": theirs}))
        .await;
    let read = app
        .as_user(Method::GET, &format!("/api/v1/jobs/{their_job}"), &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let submit = app
        .as_user(Method::POST, "/api/v1/jobs", &owner)
        .json(&json!({"kind": "k", "project_id": theirs}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        submit.status(),
        StatusCode::BAD_REQUEST,
        "another project is as unknown as none"
    );
    let members = app
        .as_user(
            Method::GET,
            &format!("/api/v1/projects/{theirs}/members"),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(members.status(), StatusCode::NOT_FOUND);
    // Lists show only the member's projects.
    let my_job = app
        .submit_job(&app.admin_key, json!({"kind": "k", "project_id": mine}))
        .await;
    app.wait_for_projections().await;
    let jobs: Value = app
        .as_user(Method::GET, "/api/v1/jobs", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [my_job.to_string()]);
    let projects: Value = app
        .as_user(Method::GET, "/api/v1/projects", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(projects["data"].as_array().unwrap().len(), 1);
    // An owner's new key can hold no scope the owner lacks.
    let admin_key = app
        .as_user(Method::POST, "/api/v1/api-keys", &owner)
        .json(&json!({"name": "escalate", "scopes": ["admin"], "project_id": mine}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_key.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_removed_member_loses_access_at_once() {
    let app = TestApp::spawn().await;
    let project = app.create_project("p").await;
    let job = app
        .submit_job(&app.admin_key, json!({"kind": "k", "project_id": project}))
        .await;
    let token = app.member_token(project, "viewer").await;
    let me: Value = app
        .as_user(Method::GET, "/api/v1/auth/me", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = me["id"].as_str().unwrap().to_owned();
    assert_eq!(
        me["projects"],
        json!([{"project_id": project.to_string(), "role": "viewer"}])
    );
    // Still a member elsewhere, so losing this project makes its jobs unknown (404), not a
    // lack of any reading right (403).
    let elsewhere = app.create_project("elsewhere").await;
    let put = app
        .request(
            Method::PUT,
            &format!("/api/v1/projects/{elsewhere}/members/{user}"),
            &app.admin_key,
        )
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let path = format!("/api/v1/jobs/{job}");
    assert_eq!(
        app.as_user(Method::GET, &path, &token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.wait_for_projections().await;
    let members: Value = app
        .get(
            &format!("/api/v1/projects/{project}/members"),
            &app.admin_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(members["data"][0]["user_id"], user.as_str());
    assert_eq!(members["data"][0]["role"], "viewer");
    let removed = app
        .request(
            Method::DELETE,
            &format!("/api/v1/projects/{project}/members/{user}"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.as_user(Method::GET, &path, &token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let again = app
        .request(
            Method::DELETE,
            &format!("/api/v1/projects/{project}/members/{user}"),
            &app.admin_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
