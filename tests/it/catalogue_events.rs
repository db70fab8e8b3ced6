//! Every type `["*"]` delivers is in the catalogue and can be subscribed to alone: a session's
//! events (`user.logged_in`, `user.logged_out`, `user.password_changed`) reach an account-wide
//! endpoint, a secret rotation (`webhook_endpoint.secret_rotated`) and a new name
//! (`project.renamed`) the project's endpoint, each with the fields its catalogue example shows.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::receiver::{Received, Receiver};
use crate::support::{TestApp, PASSWORD};

async fn subscribe(
    app: &TestApp,
    project: Option<uuid::Uuid>,
    url: &str,
    types: &[&str],
) -> String {
    let body = json!({"url": url, "event_types": types, "project_id": project});
    let created = app.post("/api/v1/webhooks", &app.admin_key, body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    created["id"].as_str().unwrap().to_owned()
}

/// The keys of `data` in each message, by type.
fn fields(got: &[Received]) -> Vec<(String, BTreeSet<String>)> {
    got.iter()
        .map(|r| {
            let body = r.json();
            let keys = body["data"].as_object().unwrap().keys().cloned().collect();
            (body["type"].as_str().unwrap().to_owned(), keys)
        })
        .collect()
}

#[tokio::test]
async fn session_and_secret_events_are_in_the_catalogue_and_delivered_as_shown() {
    let app = TestApp::spawn().await;
    let account = Receiver::start().await;
    let session_types = ["user.logged_in", "user.logged_out", "user.password_changed"];
    subscribe(&app, None, &account.url, &session_types).await;
    let project = app.create_project("rotating").await;
    let own = Receiver::start().await;
    let endpoint = subscribe(
        &app,
        Some(project),
        &own.url,
        &["webhook_endpoint.secret_rotated", "project.renamed"],
    )
    .await;

    app.create_user("sam@example.com", PASSWORD, false).await;
    let token = app.login("sam@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = app
        .as_user(Method::POST, "/api/v1/auth/change-password", &token)
        .json(&json!({"current_password": PASSWORD, "new_password": "another long passphrase 2"}))
        .send()
        .await
        .unwrap();
    assert!(changed.status().is_success(), "{}", changed.status());
    let logout = app
        .as_user(Method::POST, "/api/v1/auth/logout", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let rotated = app
        .post(
            &format!("/api/v1/webhooks/{endpoint}/rotate-secret"),
            &app.admin_key,
            json!({"grace_period_seconds": 60}),
        )
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let renamed = app
        .request(
            Method::PATCH,
            &format!("/api/v1/projects/{project}"),
            &app.admin_key,
        )
        .json(&json!({"name": "rotated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);

    let catalogue: Value = app
        .get("/api/v1/event-types", &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    let example = |kind: &str| -> BTreeSet<String> {
        let entry = catalogue["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} is not in the catalogue"));
        entry["example"]["data"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let heard = fields(&account.wait_for(3, Duration::from_secs(10)).await);
    let types: Vec<&str> = heard.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["user.logged_in", "user.password_changed", "user.logged_out"],
        "one of each, in the order they happened"
    );
    let heard_own = fields(&own.wait_for(2, Duration::from_secs(10)).await);
    let types: Vec<&str> = heard_own.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["webhook_endpoint.secret_rotated", "project.renamed"]
    );
    for (kind, keys) in heard.iter().chain(&heard_own) {
        assert_eq!(
            keys,
            &example(kind),
            "{kind}: delivered fields against the example"
        );
    }
}
