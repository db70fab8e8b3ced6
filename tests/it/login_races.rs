//! A login racing a password change: the password it checked was replaced before its session
//! reached the log, so the session must not outlive the change.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestApp, PASSWORD};

#[tokio::test]
async fn a_login_whose_password_changed_while_it_was_checked_fails() {
    let app = TestApp::spawn().await;
    let ada = app.create_user("ada@example.com", PASSWORD, false).await;
    let new_password = "a brand new password";
    let bob = app
        .create_user("bob@example.com", new_password, false)
        .await;

    // Appends wait behind this lock, so the login stops once its password has been checked
    // and its session is about to reach the log.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let login = tokio::spawn(
        app.client
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
            .send(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'events'::regclass \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no append waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the password changes (as `change-password` stores it: outside the log).
    sqlx::query(
        "UPDATE user_credentials SET password_hash = \
           (SELECT password_hash FROM user_credentials WHERE user_id = $2) WHERE user_id = $1",
    )
    .bind(ada)
    .bind(bob)
    .execute(&app.pool)
    .await
    .unwrap();
    blocker.commit().await.unwrap();

    let answer = login.await.unwrap().unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // The session it started is over, and the new password logs in.
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE event_type = 'user.logged_in') \
              - count(*) FILTER (WHERE event_type = 'user.logged_out') \
           FROM events WHERE aggregate_id = $1",
    )
    .bind(ada.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(open, 0);
    app.login("ada@example.com", new_password).await;
}
