//! Runs the verification examples of docs/WEBHOOKS.md against a real delivery: the Python one
//! (with the `standardwebhooks` package that `scripts/test` installs into `target/pydeps`), the
//! JavaScript one with Node.js, and the Rust one, which is compiled here as `verify_example`
//! (the test checks the guide shows exactly that file). Each must accept the delivery and
//! refuse it once the body is changed.

use std::time::Duration;

use serde_json::json;

use crate::docs::block;
use crate::support::receiver::{Received, Receiver};
use crate::support::TestApp;
use crate::verify_example::verify;

async fn a_delivery() -> (String, Received) {
    let app = TestApp::spawn().await;
    let (project, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    let receiver = Receiver::start().await;
    let (_, secret) =
        crate::webhooks::endpoint(&app, project, &receiver.url, &["job.queued"]).await;
    app.submit_job(&key, json!({"kind": "render"})).await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    (secret, got.into_iter().next().expect("a delivery"))
}

async fn run_example(
    language: &str,
    program: &str,
    file_name: &str,
    secret: &str,
    message: &Received,
    body: &str,
) -> std::process::Output {
    let fence = if program == "node" {
        "javascript"
    } else {
        "python"
    };
    let code = block("docs/WEBHOOKS.md", &format!("### {language}"), fence);
    let dir = crate::support::scratch::ScratchDir::new("herald-webhook-example");
    let file = dir.join(file_name);
    std::fs::write(&file, code).unwrap();
    let pydeps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps");
    tokio::process::Command::new(program)
        .arg(&file)
        .env("PYTHONPATH", pydeps)
        .env("WEBHOOK_SECRET", secret)
        .env("WEBHOOK_ID", &message.webhook_id)
        .env("WEBHOOK_TIMESTAMP", &message.timestamp)
        .env("WEBHOOK_SIGNATURE", &message.signature)
        .env("WEBHOOK_BODY", body)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test installs it): {e}"))
}

#[tokio::test]
async fn the_python_and_javascript_examples_verify_a_real_delivery() {
    let (secret, message) = a_delivery().await;
    let body = String::from_utf8(message.body.clone()).unwrap();
    let tampered = body.replace("job.queued", "job.succeeded");
    for (language, program, file) in [
        (
            "Python (the `standardwebhooks` package)",
            "python3",
            "verify.py",
        ),
        (
            "JavaScript (Node.js 18+, no dependencies)",
            "node",
            "verify.mjs",
        ),
    ] {
        let good = run_example(language, program, file, &secret, &message, &body).await;
        assert!(
            good.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&good.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "job.queued");
        let bad = run_example(language, program, file, &secret, &message, &tampered).await;
        assert!(!bad.status.success(), "{language} accepted a changed body");
    }
}

#[tokio::test]
async fn the_rust_example_is_the_one_compiled_here_and_verifies_a_real_delivery() {
    let shown = block("docs/WEBHOOKS.md", "### Rust", "rust");
    let compiled = include_str!("verify_example.rs");
    assert_eq!(
        shown, compiled,
        "docs/WEBHOOKS.md shows a different Rust example than tests/it/verify_example.rs"
    );
    let (secret, message) = a_delivery().await;
    let now = chrono::Utc::now().timestamp();
    assert!(verify(
        &secret,
        &message.webhook_id,
        &message.timestamp,
        &message.signature,
        &message.body,
        now
    ));
    assert!(!verify(
        &secret,
        &message.webhook_id,
        &message.timestamp,
        &message.signature,
        b"{}",
        now
    ));
    assert!(!verify(
        &secret,
        &message.webhook_id,
        &message.timestamp,
        &message.signature,
        &message.body,
        now + 3600
    ));
}
