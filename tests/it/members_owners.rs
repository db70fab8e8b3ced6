//! A project keeps an owner: its last owner can neither step down nor be removed, by itself or
//! by an admin (409 `LAST_OWNER`, nothing recorded); once another member owns it, both work.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{event_count, problem, TestApp, PASSWORD};

/// Gives `user` `role` in `project` as the admin, which must be accepted.
async fn set_role(app: &TestApp, project: Uuid, user: Uuid, role: &str) {
    let put = app.put_member(project, user, role).await;
    assert_eq!(put.status(), StatusCode::OK, "{user} as {role}");
}

#[tokio::test]
async fn the_last_owner_neither_steps_down_nor_is_removed() {
    let app = TestApp::spawn().await;
    let project = app.create_project("farm").await;
    let ada = app.create_user("ada@example.com", PASSWORD, false).await;
    let bo = app.create_user("bo@example.com", PASSWORD, false).await;
    set_role(&app, project, ada, "owner").await;
    set_role(&app, project, bo, "editor").await;
    app.wait_for_projections().await;
    let login = app.login("ada@example.com", PASSWORD).await;
    let ada_token = login["access_token"].as_str().unwrap().to_owned();
    let member = format!("/api/v1/projects/{project}/members/{ada}");

    let before = event_count(&app.pool).await;
    let step_down = app
        .as_user(Method::PUT, &member, &ada_token)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(step_down.status(), StatusCode::CONFLICT);
    assert_eq!(problem(step_down).await["code"], "LAST_OWNER");
    let leave = app
        .as_user(Method::DELETE, &member, &ada_token)
        .send()
        .await
        .unwrap();
    assert_eq!(leave.status(), StatusCode::CONFLICT);
    let removed = app
        .request(Method::DELETE, &member, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::CONFLICT, "an admin too");
    assert_eq!(
        event_count(&app.pool).await,
        before,
        "a refusal recorded something"
    );
    // Owner to owner changes nothing and is not refused; other members come and go.
    set_role(&app, project, ada, "owner").await;
    set_role(&app, project, bo, "viewer").await;

    // With a second owner, the first may step down.
    set_role(&app, project, bo, "owner").await;
    app.wait_for_projections().await;
    let step_down = app
        .as_user(Method::PUT, &member, &ada_token)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(step_down.status(), StatusCode::OK);
    app.wait_for_projections().await;
    let bo_member = format!("/api/v1/projects/{project}/members/{bo}");
    let removed = app
        .request(Method::DELETE, &bo_member, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        removed.status(),
        StatusCode::CONFLICT,
        "bo owns it alone now"
    );
    let ada_leaves = app
        .request(Method::DELETE, &member, &app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(ada_leaves.status(), StatusCode::NO_CONTENT);
}
