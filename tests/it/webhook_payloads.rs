//! What webhook payloads leave out: a key's `key_hash`, never shown by the event log, was sent
//! in `api_key.created` deliveries before, and an endpoint's custom header values in its own
//! events; migrations 0027 and 0028 take them out of the stored ones. (That new deliveries and
//! the event log leave them out is checked in `webhooks.rs`, through a real receiver.)

use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::TestApp;

const MIGRATION: &str = include_str!("../../migrations/0027_webhook_payloads_without_key_hash.sql");
const HEADERS: &str =
    include_str!("../../migrations/0028_webhook_payloads_without_header_values.sql");

async fn stored(app: &TestApp, id: Uuid, payload: Value) {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, endpoint_id, global_position, event_type, webhook_id, \
                                         payload, status, next_attempt_at) \
         VALUES ($1, $2, 1, $3, 'msg_x', $4, 'succeeded', now())",
    )
    .bind(id)
    .bind(Uuid::now_v7())
    .bind(payload["type"].as_str().unwrap().to_owned())
    .bind(&payload)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn payload_of(app: &TestApp, id: Uuid) -> Value {
    sqlx::query_scalar("SELECT payload FROM webhook_deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_migration_takes_key_hash_out_of_stored_deliveries_and_nothing_else() {
    let app = TestApp::spawn().await;
    let data = json!({"api_key_id": "abc", "name": "k", "start": "hrld_live_abc"});
    let mut leaked = data.clone();
    leaked["key_hash"] = json!("b533");
    let (old, other) = (Uuid::now_v7(), Uuid::now_v7());
    let message = |data: Value| json!({"id": "evt_1", "type": "api_key.created", "data": data});
    stored(&app, old, message(leaked)).await;
    let job = json!({"id": "evt_2", "type": "job.queued", "data": {"job_id": "j", "kind": "k"}});
    stored(&app, other, job.clone()).await;

    sqlx::raw_sql(MIGRATION).execute(&app.pool).await.unwrap();
    assert_eq!(payload_of(&app, old).await, message(data));
    assert_eq!(payload_of(&app, other).await, job);
}

#[tokio::test]
async fn the_migration_takes_header_values_out_of_stored_endpoint_events() {
    let app = TestApp::spawn().await;
    let message = |kind: &str, headers: Value| {
        json!({"id": "evt_1", "type": kind,
               "data": {"webhook_endpoint_id": "e", "url": "https://x.example", "headers": headers}})
    };
    let secret = json!({"Authorization": "Bearer receiver-secret", "X-Team": "render"});
    let redacted = json!({"Authorization": "[redacted]", "X-Team": "[redacted]"});
    let (created, updated, none, deleted) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    stored(
        &app,
        created,
        message("webhook_endpoint.created", secret.clone()),
    )
    .await;
    stored(
        &app,
        updated,
        message("webhook_endpoint.updated", secret.clone()),
    )
    .await;
    stored(&app, none, message("webhook_endpoint.updated", json!({}))).await;
    let other = json!({"id": "evt_2", "type": "webhook_endpoint.deleted",
                       "data": {"webhook_endpoint_id": "e"}});
    stored(&app, deleted, other.clone()).await;

    sqlx::raw_sql(HEADERS).execute(&app.pool).await.unwrap();
    let kept = payload_of(&app, created).await;
    assert_eq!(kept, message("webhook_endpoint.created", redacted.clone()));
    assert_eq!(
        payload_of(&app, updated).await,
        message("webhook_endpoint.updated", redacted)
    );
    assert_eq!(
        payload_of(&app, none).await,
        message("webhook_endpoint.updated", json!({}))
    );
    assert_eq!(payload_of(&app, deleted).await, other);
}
