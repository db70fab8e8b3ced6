//! The rate-limit headers count from when the limits were decided: a request whose handler ran
//! for seconds is told the same reset time as one answered at once, not one pushed later by the
//! handler's time.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn a_slow_request_is_told_the_reset_its_limits_were_decided_with() {
    // Six submissions a minute: after one, the budget is full again 10 s later.
    let app = TestApp::spawn_with(|c| c.rate_limits.write_per_minute = 6).await;
    let (_, key) = app.project_with_key(&["jobs:read", "jobs:write"]).await;
    // A read first (its own budget), so the key and its day are known before the submission.
    assert_eq!(app.get("/api/v1/jobs", &key).await.status(), StatusCode::OK);
    // The submission is decided at once and then waits 3 s for its event to be written.
    let blocker = app.block_writes_to("events").await;
    let sent_at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let submission = app.post("/api/v1/jobs", &key, json!({"kind": "slow"}));
    let release = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        blocker.commit().await.unwrap();
    };
    let (response, ()) = tokio::join!(submission, release);
    let answered_at = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-ratelimit-remaining"), "5");
    // The reset is the whole second after the decision's 10 s. A busy machine may take a
    // second to decide; a reset counted from the answer would be at least 13 s after sending.
    let reset: i64 = header("x-ratelimit-reset").parse().unwrap();
    let earliest = (sent_at + 10.0).ceil() as i64;
    assert!(
        (earliest..=earliest + 1).contains(&reset),
        "reset {reset}, sent at {sent_at}: 10 s after the decision, not after the answer"
    );
    // `RateLimit` says how long is left when answering: about 7 of the 10 s (8 or 9 if the
    // decision was slow, less if the answer was; 10 had it been counted from the answer).
    let fields = header("ratelimit");
    let left: i64 = fields.rsplit("t=").next().unwrap().parse().unwrap();
    let least = (reset - answered_at.ceil() as i64).max(0);
    assert!(
        (least..=9).contains(&left),
        "{fields}, answered at {answered_at}"
    );
}
