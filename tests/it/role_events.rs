//! A user's role in a project is an event of that project (migration 0024): the project's
//! auditors (its owners, its keys with `audit:read`) see who was given or lost a role in it
//! through `GET /api/v1/events`, and nobody bound to other projects does. A user's other
//! events still belong to no project. Webhooks: only account-wide endpoints hear user events,
//! and they can subscribe to the two role event types alone.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::receiver::{signature_valid, Receiver};
use crate::support::{TestApp, PASSWORD};

const ROLE_EVENTS: &str = "type=user.project_role_granted,user.project_role_revoked";

/// The role events a request sees: `(type, user, project)`, oldest first.
async fn role_events(request: reqwest::RequestBuilder) -> Vec<(String, String, String)> {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    let mut seen: Vec<_> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&e["type"]),
                text(&e["aggregate_id"]),
                text(&e["project_id"]),
            )
        })
        .collect();
    seen.reverse();
    seen
}

#[tokio::test]
async fn a_projects_auditors_see_its_role_events_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let mine = app.create_project("mine").await;
    let theirs = app.create_project("theirs").await;
    let owner = app.member_token(mine, "owner").await;
    let other_owner = app.member_token(theirs, "owner").await;
    let viewer = app.member_token(mine, "viewer").await;
    // A user given a role in each project, then removed from mine.
    let both = app.create_user("both@example.com", PASSWORD, false).await;
    let member = |project: Uuid| format!("/api/v1/projects/{project}/members/{both}");
    for project in [mine, theirs] {
        let granted = app
            .request(Method::PUT, &member(project), &app.admin_key)
            .json(&json!({"role": "editor"}))
            .send()
            .await
            .unwrap();
        assert_eq!(granted.status(), StatusCode::OK);
    }
    let removed = app
        .request(Method::DELETE, &member(mine), &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);

    let path = format!("/api/v1/events?{ROLE_EVENTS}&limit=100");
    let (mine, theirs, both) = (mine.to_string(), theirs.to_string(), both.to_string());
    let owners_view = role_events(app.as_user(Method::GET, &path, &owner)).await;
    let in_mine: Vec<_> = owners_view.iter().filter(|e| e.2 == mine).collect();
    assert_eq!(owners_view.len(), in_mine.len(), "{owners_view:?}");
    // The owner's own grant, the viewer's, then the user's grant and its removal.
    let kinds: Vec<&str> = owners_view.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "user.project_role_granted",
            "user.project_role_granted",
            "user.project_role_granted",
            "user.project_role_revoked"
        ]
    );
    assert_eq!(owners_view[3].1, both);
    // The other project's owner sees its own grant and the user's grant there, nothing of mine.
    let others_view = role_events(app.as_user(Method::GET, &path, &other_owner)).await;
    assert_eq!(others_view.len(), 2, "{others_view:?}");
    assert!(others_view.iter().all(|e| e.2 == theirs));
    assert_eq!(others_view[1].1, both);
    // A viewer reads the project's jobs, keys and endpoints, not its audit: no role events.
    let viewers_view = role_events(app.as_user(Method::GET, &path, &viewer)).await;
    assert_eq!(viewers_view, []);
    // A project key with `audit:read` sees them; an admin sees both projects'.
    let key = app
        .create_key(Some(mine.parse().unwrap()), &["audit:read"])
        .await;
    let keys_view = role_events(app.request(Method::GET, &path, &key)).await;
    assert_eq!(keys_view, owners_view);
    let admins_view = role_events(app.request(Method::GET, &path, &app.admin_key)).await;
    assert_eq!(admins_view.len(), 6, "{admins_view:?}");
    // A user's other events still belong to no project.
    let created = role_events(app.request(
        Method::GET,
        &format!("/api/v1/events?type=user.created&aggregate_id={both}"),
        &app.admin_key,
    ))
    .await;
    assert_eq!(created, [("user.created".to_owned(), both, String::new())]);
}

/// An endpoint for every event, of `project` or (without one) account-wide.
async fn endpoint(app: &TestApp, project: Option<Uuid>) -> Uuid {
    let body = json!({"url": "https://hooks.example.com/herald", "event_types": ["*"],
                      "project_id": project});
    let created = app.post("/api/v1/webhooks", &app.admin_key, body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    created["id"].as_str().unwrap().parse().unwrap()
}

/// The user events `endpoint` has deliveries of.
async fn heard(app: &TestApp, endpoint: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM webhook_deliveries WHERE endpoint_id = $1 \
          AND event_type LIKE 'user.%' ORDER BY global_position",
    )
    .bind(endpoint)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Webhooks: only account-wide endpoints hear user events, role events included; a project's
/// own endpoint (which its editors may set up and replay) hears none, neither as they happen
/// nor through a replay of the project's history.
#[tokio::test]
async fn only_account_wide_endpoints_hear_role_events() {
    let app = TestApp::spawn().await;
    let project = app.create_project("hooked").await;
    let own = endpoint(&app, Some(project)).await;
    let account = endpoint(&app, None).await;
    app.member_token(project, "editor").await;
    app.wait_for_projections().await;
    let expected = [
        "user.created",
        "user.project_role_granted",
        "user.logged_in",
    ];
    assert_eq!(heard(&app, account).await, expected);
    assert_eq!(heard(&app, own).await, Vec::<String>::new());

    let replay = app
        .post(
            &format!("/api/v1/webhooks/{own}/replay"),
            &app.admin_key,
            json!({"from_position": 0}),
        )
        .await;
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    let location = replay.headers()["location"].to_str().unwrap().to_owned();
    let path = location.trim_start_matches(&app.base_url).to_owned();
    for _ in 0..200 {
        let status: Value = app.get(&path, &app.admin_key).await.json().await.unwrap();
        if status["status"] != "running" {
            assert_eq!(status["status"], "completed", "{status}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(heard(&app, own).await, Vec::<String>::new());
}

/// The two role event types are in the webhook catalogue: an account-wide endpoint subscribed
/// to them alone receives a grant and a removal (with the user, the project and the role),
/// signed, and none of the other events around them; the catalogue's examples carry the same
/// fields.
#[tokio::test]
async fn an_account_wide_endpoint_can_follow_role_changes_alone() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let types = ["user.project_role_granted", "user.project_role_revoked"];
    let created = app
        .post(
            "/api/v1/webhooks",
            &app.admin_key,
            json!({"url": receiver.url, "project_id": null, "event_types": types}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let endpoint: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();

    let project = app.create_project("followed").await;
    let user = app.create_user("role@example.com", PASSWORD, false).await;
    let member = format!("/api/v1/projects/{project}/members/{user}");
    let granted = app
        .request(Method::PUT, &member, &app.admin_key)
        .json(&json!({"role": "editor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), StatusCode::OK);
    let removed = app
        .request(Method::DELETE, &member, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);

    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| signature_valid(&secret, r)));
    let body = |kind: &str| {
        got.iter()
            .map(|r| r.json())
            .find(|b| b["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (user, project) = (user.to_string(), project.to_string());
    let grant = body(types[0]);
    assert_eq!(grant["data"]["user_id"], user, "{grant}");
    assert_eq!(grant["data"]["project_id"], project, "{grant}");
    assert_eq!(grant["data"]["role"], "editor", "{grant}");
    let removal = body(types[1]);
    assert_eq!(removal["data"]["user_id"], user, "{removal}");
    assert_eq!(removal["data"]["project_id"], project, "{removal}");
    // Only those two: not `user.created`, `project.created` or the admin's own events.
    app.wait_for_projections().await;
    let delivered: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY global_position",
    )
    .bind(endpoint)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(delivered, types);

    let catalogue: Value = app
        .get("/api/v1/event-types", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    for kind in types {
        let entry = catalogue["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} is not in the catalogue"));
        let example = &entry["example"];
        assert_eq!(example["type"], kind);
        assert!(example["data"]["user_id"].is_string(), "{example}");
        assert!(example["data"]["project_id"].is_string(), "{example}");
        assert_eq!(
            example["data"]["role"].is_string(),
            kind == types[0],
            "{example}"
        );
    }
}

/// A project's endpoint never hears user events, so it cannot subscribe to them: creating one
/// with a user event type, or adding one by a change, is refused (400, the type named) and
/// appends nothing; the catalogue marks those types; an account-wide endpoint takes them.
#[tokio::test]
async fn a_project_endpoint_cannot_subscribe_to_user_events() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["webhooks:write"]).await;
    let url = "https://hooks.example.com/herald";
    let before = crate::support::event_count(&app.pool).await;
    for (caller, body) in [
        (
            &key,
            json!({"url": url, "event_types": ["job.succeeded", "user.created"]}),
        ),
        (
            &app.admin_key,
            json!({"url": url, "event_types": ["user.project_role_granted"], "project_id": project}),
        ),
    ] {
        let refused = app.post("/api/v1/webhooks", caller, body).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["code"], "VALIDATION_FAILED", "{problem}");
        assert!(problem.to_string().contains("account-wide"), "{problem}");
    }
    assert_eq!(crate::support::event_count(&app.pool).await, before);

    let body = json!({"url": url, "event_types": ["job.succeeded"]});
    let created: Value = app
        .post("/api/v1/webhooks", &key, body)
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let before = crate::support::event_count(&app.pool).await;
    let change = |types: Value| {
        app.request(Method::PATCH, &format!("/api/v1/webhooks/{id}"), &key)
            .json(&json!({"event_types": types}))
            .send()
    };
    let refused = change(json!(["job.succeeded", "user.project_role_revoked"]))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(crate::support::event_count(&app.pool).await, before);
    let all = change(json!(["*"])).await.unwrap();
    assert_eq!(
        all.status(),
        StatusCode::OK,
        "`*` hears what the endpoint can"
    );

    let account = json!({"url": url, "event_types": ["user.created"], "project_id": null});
    let created = app.post("/api/v1/webhooks", &app.admin_key, account).await;
    assert_eq!(created.status(), StatusCode::CREATED);

    let catalogue: Value = app
        .get("/api/v1/event-types", &key)
        .await
        .json()
        .await
        .unwrap();
    let marked: Vec<&str> = catalogue["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["account_wide_only"] == true)
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        marked,
        [
            "user.created",
            "user.logged_in",
            "user.logged_out",
            "user.password_changed",
            "user.project_role_granted",
            "user.project_role_revoked"
        ]
    );
}
