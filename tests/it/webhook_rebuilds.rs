//! The webhook projector's copy of the endpoints while it is rebuilt from the log: old versions
//! of the endpoints pass through it, so the dispatcher claims nothing until the rebuild has
//! passed the point where the log ended when it began; then deliveries flow again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn no_delivery_is_claimed_while_the_endpoint_copy_is_rebuilt() {
    let app = TestApp::spawn_with(|c| c.webhooks.retry_schedule = "0,1,1".into()).await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    receiver.behaviour.flaky.store(true, Ordering::SeqCst); // the first call fails
    endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "a"})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.behaviour.calls.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no first attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // As if a rebuild had begun with the log ending far ahead of the checkpoint: the retry,
    // due about a second after the first attempt, waits.
    let horizon = |tx: Option<&'static str>| {
        sqlx::query(
            "UPDATE projection_checkpoints SET rebuild_tx = $1::xid8, rebuild_position = 0 \
              WHERE name = 'webhooks'",
        )
        .bind(tx)
        .execute(&app.pool)
    };
    horizon(Some("9223372036854775807")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        receiver.behaviour.calls.load(Ordering::SeqCst),
        1,
        "a retry was sent while the endpoint copy was being rebuilt"
    );
    horizon(None).await.unwrap();
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    // A real rebuild notes where the log ended, and once past it deliveries flow again.
    let rebuild = app
        .post(
            "/api/v1/admin/projections/webhooks/rebuild",
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(rebuild.status(), StatusCode::ACCEPTED);
    let noted: (Option<i64>, i64) = sqlx::query_as(
        "SELECT c.rebuild_position, (SELECT max(global_position) FROM events) \
           FROM projection_checkpoints c WHERE c.name = 'webhooks'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        noted.0.is_some_and(|at| at > 0 && at <= noted.1),
        "{noted:?}"
    );
    app.submit_job(&key, json!({"kind": "b"})).await;
    assert_eq!(receiver.wait_for(2, Duration::from_secs(10)).await.len(), 2);
}
