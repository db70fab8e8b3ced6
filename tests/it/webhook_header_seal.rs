//! Webhook endpoints' custom header values never enter an event as given (DESIGN §2.5): they
//! are sealed before the command (`herald_webhooks::header_seal`), kept sealed in the log and
//! the read model, and opened only for the receiver's request and the endpoint's managers.
//! Values stored in plain text by earlier versions are sealed when a server starts, through the
//! one update the log lets through (migration 0031), which refuses every other change.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::receiver::Receiver;
use crate::support::{problem, test_config, TestApp};

/// Every stored copy of the endpoint's headers: each event's and the read model's, as text.
async fn stored_texts(app: &TestApp, endpoint: Uuid) -> Vec<String> {
    app.wait_for_projections().await;
    sqlx::query_scalar(
        "SELECT payload::text FROM events WHERE aggregate_id = $1::text \
         UNION ALL SELECT doc::text FROM webhook_endpoints WHERE id = $1",
    )
    .bind(endpoint)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The `X-Custom` value the next delivery to `receiver` carries (a job submitted for it).
async fn next_delivered(app: &TestApp, key: &str, receiver: &Receiver, n: usize) -> String {
    app.submit_job(key, json!({"kind": "render"})).await;
    let got = receiver.wait_for(n, Duration::from_secs(10)).await;
    got[n - 1].custom.clone().expect("the header was sent")
}

async fn shown(app: &TestApp, endpoint: Uuid) -> Value {
    let got: Value = app
        .get(&format!("/api/v1/webhooks/{endpoint}"), &app.admin_key)
        .await
        .json()
        .await
        .unwrap();
    got["headers"].clone()
}

async fn patch(app: &TestApp, endpoint: Uuid, body: Value) -> reqwest::Response {
    app.request(
        Method::PATCH,
        &format!("/api/v1/webhooks/{endpoint}"),
        &app.admin_key,
    )
    .json(&body)
    .send()
    .await
    .unwrap()
}

/// Creates an endpoint of `project` at `url` hearing `job.queued`, with `X-Custom: value`; its
/// answer.
async fn created(app: &TestApp, project: Uuid, url: &str, value: &str) -> Value {
    app.post(
        "/api/v1/webhooks",
        &app.admin_key,
        json!({"url": url, "event_types": ["job.queued"], "project_id": project,
               "headers": {"X-Custom": value}}),
    )
    .await
    .json()
    .await
    .unwrap()
}

fn id_of(created: &Value) -> Uuid {
    created["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn header_values_are_stored_sealed_and_opened_for_the_receiver_and_managers() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    let created = created(&app, project, &receiver.url, "first-s3cret").await;
    assert_eq!(created["headers"], json!({"X-Custom": "first-s3cret"}));
    let endpoint = id_of(&created);
    let texts = stored_texts(&app, endpoint).await;
    assert_eq!(texts.len(), 2, "one event and the read model");
    for text in &texts {
        assert!(!text.contains("first-s3cret"), "{text}");
        assert!(text.contains("sealed:v1:"), "{text}");
    }
    assert_eq!(
        shown(&app, endpoint).await,
        json!({"X-Custom": "first-s3cret"})
    );
    assert_eq!(
        next_delivered(&app, &key, &receiver, 1).await,
        "first-s3cret"
    );

    let changed = patch(
        &app,
        endpoint,
        json!({"headers": {"X-Custom": "second-s3cret"}}),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["headers"], json!({"X-Custom": "second-s3cret"}));
    // A change of something else keeps the sealed value as it is.
    let described = patch(&app, endpoint, json!({"description": "renders"})).await;
    assert_eq!(described.status(), StatusCode::OK);
    for text in stored_texts(&app, endpoint).await {
        assert!(!text.contains("s3cret"), "{text}");
    }
    assert_eq!(
        shown(&app, endpoint).await,
        json!({"X-Custom": "second-s3cret"})
    );
    assert_eq!(
        next_delivered(&app, &key, &receiver, 2).await,
        "second-s3cret"
    );
    let ping = app
        .post(
            &format!("/api/v1/webhooks/{endpoint}/test"),
            &app.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(ping.status(), StatusCode::OK);
    let pinged = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(pinged[2].custom.as_deref(), Some("second-s3cret"));

    // A new value is checked as given, before it is sealed, and nothing is appended.
    let before = stored_texts(&app, endpoint).await.len();
    let refused = patch(&app, endpoint, json!({"headers": {"X-Custom": "a\u{1}b"}})).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = problem(refused).await;
    assert_eq!(body["errors"][0]["field"], "headers.X-Custom");
    assert_eq!(stored_texts(&app, endpoint).await.len(), before);
}

/// Sets the endpoint's first event and read-model copy back to plain header values, as an
/// earlier version stored them (the append-only rule is off for this transaction only).
async fn store_as_before(app: &TestApp, endpoint: Uuid, headers: &Value) {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::raw_sql("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = json_build_object('headers', $2::json)::jsonb \
                                     || (payload::jsonb - 'headers') \
          WHERE aggregate_id = $1::text AND sequence = 1",
    )
    .bind(endpoint)
    .bind(headers)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::raw_sql("ALTER TABLE events ENABLE TRIGGER events_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE webhook_endpoints SET doc = jsonb_set(doc, '{headers}', $2) WHERE id = $1")
        .bind(endpoint)
        .bind(headers)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn values_stored_in_plain_text_are_sealed_when_a_server_starts() {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let receiver = Receiver::start().await;
    let endpoint = id_of(&created(&app, project, &receiver.url, "x").await);
    app.wait_for_projections().await;
    let plain = json!({"X-Custom": "legacy-s3cret"});
    store_as_before(&app, endpoint, &plain).await;
    assert!(stored_texts(&app, endpoint).await[0].contains("legacy-s3cret"));
    // Read as they are meanwhile.
    assert_eq!(
        next_delivered(&app, &key, &receiver, 1).await,
        "legacy-s3cret"
    );

    // A server with another pepper seals nothing: its key would lock the values away.
    let other = b"another-pepper-0123456789".as_slice();
    let sealed = herald_api::webhook_headers::seal_stored(
        &app.pool,
        &herald_webhooks::header_seal::HeaderSeal::from_pepper(other),
        &herald_api::audit::ChainKey::from_pepper(other),
    )
    .await
    .unwrap();
    assert_eq!(sealed, 0);
    assert!(stored_texts(&app, endpoint).await[0].contains("legacy-s3cret"));

    let restarted = TestApp::start(test_config(&app.database_url)).await;
    let texts = stored_texts(&restarted, endpoint).await;
    for text in &texts {
        assert!(!text.contains("legacy-s3cret"), "{text}");
    }
    // The read model holds exactly what the projection would write from the sealed event.
    let (event, doc): (Value, Value) = sqlx::query_as(
        "SELECT e.payload::jsonb -> 'headers', w.doc -> 'headers' FROM events e \
           JOIN webhook_endpoints w ON w.id::text = e.aggregate_id \
          WHERE e.aggregate_id = $1::text AND e.sequence = 1",
    )
    .bind(endpoint)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(event, doc);
    assert!(event["X-Custom"]
        .as_str()
        .unwrap()
        .starts_with("sealed:v1:"));
    assert_eq!(shown(&restarted, endpoint).await, plain);
    assert_eq!(
        next_delivered(&restarted, &key, &receiver, 2).await,
        "legacy-s3cret"
    );
    // A read-model copy written plain after its event was sealed (a projector that read the
    // event before) is mended by the next start, which finds no event left to seal.
    sqlx::query("UPDATE webhook_endpoints SET doc = jsonb_set(doc, '{headers}', $2) WHERE id = $1")
        .bind(endpoint)
        .bind(&plain)
        .execute(&app.pool)
        .await
        .unwrap();
    let sealed = herald_api::webhook_headers::seal_stored(
        &app.pool,
        &app.state.header_seal,
        &app.state.chain_key,
    )
    .await
    .unwrap();
    assert_eq!(sealed, 0);
    for text in stored_texts(&app, endpoint).await {
        assert!(!text.contains("legacy-s3cret"), "{text}");
    }
}

#[tokio::test]
async fn the_log_lets_through_no_other_change() {
    let app = TestApp::spawn().await;
    let project = app.create_project("sealed").await;
    let endpoint = id_of(&created(&app, project, "http://127.0.0.1:9/x", "x").await);
    // A sealed value is not replaced by another sealed-looking one.
    let sealed = "\"sealed:v1:AAAA\"";
    let resealed = sqlx::query(&format!(
        "UPDATE events SET payload = jsonb_set(payload::jsonb, '{{headers,X-Custom}}', '{sealed}')::json \
          WHERE aggregate_id = $1 AND sequence = 1"
    ))
    .bind(endpoint.to_string())
    .execute(&app.pool)
    .await;
    assert!(resealed.is_err(), "a sealed value replaced");
    store_as_before(&app, endpoint, &json!({"X-Custom": "plain"})).await;
    let endpoint = endpoint.to_string();
    let changes = [
        // A plain value, a header renamed, another field, another column, a row removed.
        "payload = jsonb_set(payload::jsonb, '{headers,X-Custom}', '\"changed\"')::json".to_owned(),
        format!("payload = (payload::jsonb - 'headers' || '{{\"headers\": {{\"X-Other\": {sealed}}}}}')::json"),
        format!("payload = jsonb_set(jsonb_set(payload::jsonb, '{{headers,X-Custom}}', '{sealed}'), '{{url}}', '\"http://elsewhere\"')::json"),
        format!("payload = jsonb_set(payload::jsonb, '{{headers,X-Custom}}', '{sealed}')::json, event_version = '2'"),
    ];
    for change in &changes {
        let refused = sqlx::query(&format!(
            "UPDATE events SET {change} WHERE aggregate_id = $1 AND sequence = 1"
        ))
        .bind(&endpoint)
        .execute(&app.pool)
        .await;
        assert!(refused.is_err(), "{change}");
    }
    let deleted = sqlx::query("DELETE FROM events WHERE aggregate_id = $1")
        .bind(&endpoint)
        .execute(&app.pool)
        .await;
    assert!(deleted.is_err());
    let job_event = sqlx::query(
        "UPDATE events SET payload = payload WHERE aggregate_type = 'project' AND aggregate_id = $1",
    )
    .bind(project.to_string())
    .execute(&app.pool)
    .await;
    assert!(job_event.is_err(), "another aggregate's event");
    // The one change let through: a value replaced by a sealed one.
    let allowed = sqlx::query(&format!(
        "UPDATE events SET payload = jsonb_set(payload::jsonb, '{{headers,X-Custom}}', '{sealed}')::json \
          WHERE aggregate_id = $1 AND sequence = 1"
    ))
    .bind(&endpoint)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(allowed.rows_affected(), 1);
}
