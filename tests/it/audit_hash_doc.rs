//! The request log's hash, as docs/API.md describes it for a verifier of your own, recomputed
//! here from the NDJSON export and the servers' pepper with nothing of Herald's code: calls with
//! and without an actor, an error code or a user agent, so that both a missing value and a
//! present one are covered.

use chrono::{SecondsFormat, SubsecRound, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::{TestApp, PEPPER};

/// The chain key: HMAC-SHA256(pepper, "herald request log chain").
fn documented_key() -> Vec<u8> {
    let mut derive = Hmac::<Sha256>::new_from_slice(PEPPER.as_bytes()).unwrap();
    derive.update(b"herald request log chain");
    derive.finalize().into_bytes().to_vec()
}

/// One record's hash in format 3: HMAC-SHA256 under the chain key over each text as its
/// length (8 bytes, big-endian) and its bytes, a missing value as the length 2^64 - 1 alone.
fn documented_hash(prev_hash: &str, record: &Value) -> String {
    let mut digest = Hmac::<Sha256>::new_from_slice(&documented_key()).unwrap();
    let mut text = |value: Option<String>| match value {
        Some(text) => {
            digest.update(&(text.len() as u64).to_be_bytes());
            digest.update(text.as_bytes());
        }
        None => digest.update(&u64::MAX.to_be_bytes()),
    };
    text(Some(record["chain_format"].to_string()));
    text(Some(prev_hash.to_owned()));
    for name in [
        "seq",
        "occurred_at",
        "request_id",
        "actor_type",
        "actor_id",
        "project_id",
    ] {
        text(field(record, name));
    }
    for name in [
        "route",
        "method",
        "path",
        "status",
        "latency_us",
        "request_bytes",
    ] {
        text(field(record, name));
    }
    for name in [
        "response_bytes",
        "client_ip",
        "user_agent",
        "outcome",
        "error_code",
    ] {
        text(field(record, name));
    }
    let digest = digest.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A field as the hash writes it: numbers in decimal, text as exported (the time is exported
/// as it is hashed, in RFC 3339 with microseconds).
fn field(record: &Value, name: &str) -> Option<String> {
    match &record[name] {
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        other => panic!("{name}: {other}"),
    }
}

#[tokio::test]
async fn the_documented_hash_recomputes_every_exported_record() {
    let app = TestApp::spawn().await;
    let (_, key) = app.project_with_key(&["jobs:read"]).await;
    app.get("/api/v1/jobs", &key).await;
    let nobody = format!("/api/v1/jobs/{}", uuid::Uuid::nil());
    assert_eq!(app.get(&nobody, &key).await.status(), 404);
    let anonymous = app
        .client
        .get(app.url("/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // A record at a whole second: its time still has all six digits, as hashed.
    let whole_second = Utc::now().trunc_subsecs(0);
    let writer =
        herald_api::audit::AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    let record = crate::audit_writers::record_at("whole-second".into(), whole_second);
    assert!(writer.record(record).await);
    let response = app
        .get(
            "/api/v1/audit/requests/export?format=ndjson",
            &app.admin_key,
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    let records: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.iter().any(|r| r["actor_id"].is_null()));
    assert!(records.iter().any(|r| r["error_code"] == "JOB_NOT_FOUND"));
    let exported = records.iter().find(|r| r["request_id"] == "whole-second");
    let expected = whole_second.to_rfc3339_opts(SecondsFormat::Micros, true);
    assert_eq!(exported.unwrap()["occurred_at"], expected.as_str());
    let mut prev = "0".repeat(64);
    for record in &records {
        assert_eq!(record["chain_format"], 3, "{record}");
        assert_eq!(record["prev_hash"], prev.as_str());
        assert_eq!(
            record["hash"],
            documented_hash(&prev, record).as_str(),
            "{record}"
        );
        prev = documented_hash(&prev, record);
    }
}
