//! Receivers whose answer's body is slower than the request timeout: a 2xx status line that
//! arrived in time is a success (sending again would deliver the message twice), any other
//! status is a timeout to retry later.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn a_2xx_whose_body_stalls_is_delivered_and_other_statuses_time_out() {
    // The test server's webhook request timeout is 2 s; both bodies end 4 s after they begin.
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let (accepting, refusing) = (Receiver::start().await, Receiver::start().await);
    for receiver in [&accepting, &refusing] {
        receiver
            .behaviour
            .stall_body_ms
            .store(4_000, Ordering::SeqCst);
    }
    refusing.behaviour.status.store(503, Ordering::SeqCst);
    let (accepted, _) = endpoint(&app, project, &accepting.url, &["job.queued"]).await;
    let (refused, _) = endpoint(&app, project, &refusing.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;

    let delivery = first_attempted(&app, accepted).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    let attempt = &delivery["attempts_log"][0];
    assert_eq!(attempt["status_code"], 200, "{attempt}");
    assert_eq!(attempt["error_class"], Value::Null, "{attempt}");
    assert_eq!(attempt["response_body"], "accepted, ", "{attempt}");

    let delivery = first_attempted(&app, refused).await;
    assert_eq!(delivery["status"], "pending", "{delivery}");
    let attempt = &delivery["attempts_log"][0];
    assert_eq!(attempt["status_code"], 503, "{attempt}");
    assert_eq!(attempt["error_class"], "timeout", "{attempt}");
}

/// The only delivery of endpoint `id`, with its attempts, once it has been attempted.
async fn first_attempted(app: &TestApp, id: uuid::Uuid) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list: Value = app
            .get(&format!("/api/v1/webhooks/{id}/deliveries"), &app.admin_key)
            .await
            .json()
            .await
            .unwrap();
        if let Some(delivery) = list["data"].as_array().unwrap().first() {
            if delivery["attempts"].as_i64() > Some(0) {
                let path = format!("/api/v1/webhooks/{id}/deliveries/{}", delivery["id"]);
                let path = path.replace('"', "");
                return app.get(&path, &app.admin_key).await.json().await.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no attempt in time: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
