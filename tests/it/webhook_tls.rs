//! Webhooks over https: a receiver with a certificate from a private authority gets signed
//! deliveries when Herald is told to trust that authority (`webhooks.ca_file`), with
//! `https_only` on; a Herald that does not trust it refuses the connection and says why.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::receiver::{signature_valid, Receiver};
use crate::support::tls::TestAuthority;
use crate::support::TestApp;
use crate::webhooks::endpoint;

#[tokio::test]
async fn deliveries_go_over_https_to_a_receiver_whose_authority_is_trusted() {
    let authority = TestAuthority::new();
    let receiver = Receiver::start_tls(&authority).await;
    assert!(receiver.url.starts_with("https://"));
    let scratch = crate::support::scratch::ScratchDir::new("herald-ca");
    let ca_file = scratch.join("ca.pem");
    std::fs::write(&ca_file, &authority.ca_pem).unwrap();

    let app = TestApp::spawn_with(|config| {
        config.webhooks.https_only = true;
        config.webhooks.ca_file = ca_file.display().to_string();
    })
    .await;
    let (project, key) = app.project_with_key(&["jobs:write"]).await;
    let (_, secret) = endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    let job = app.submit_job(&key, json!({"kind": "render"})).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["data"]["job_id"], job.to_string().as_str());
    assert!(signature_valid(&secret, &got[0]));
    // With https_only, a plain-http URL is refused before any connection.
    let plain = Receiver::start().await;
    let (id, _) = endpoint(&app, project, &plain.url, &["*"]).await;
    let attempt: Value = app
        .post(
            &format!("/api/v1/webhooks/{id}/test"),
            &app.admin_key,
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attempt["error_class"], "refused_address", "{attempt}");
    assert!(plain.all().is_empty());

    // A Herald without the authority refuses the receiver's certificate.
    let untrusting = TestApp::spawn().await;
    let project = untrusting.create_project("p").await;
    let (id, _) = endpoint(&untrusting, project, &receiver.url, &["*"]).await;
    let test = untrusting
        .post(
            &format!("/api/v1/webhooks/{id}/test"),
            &untrusting.admin_key,
            json!({}),
        )
        .await;
    assert_eq!(test.status(), StatusCode::OK);
    let attempt: Value = test.json().await.unwrap();
    assert_eq!(attempt["succeeded"], false, "{attempt}");
    assert_eq!(attempt["error_class"], "tls_certificate", "{attempt}");
    assert_eq!(receiver.all().len(), 1, "nothing more arrived");
    let _ = std::fs::remove_file(ca_file);
}
