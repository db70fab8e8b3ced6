//! Verifying a time range of the request log: the range is widened to every position between
//! the first and the last record it names, since positions and times can disagree a little
//! (replicas stamp a record's time before their batches get positions), and a record inside
//! that is edited is still caught.

use chrono::{DateTime, Duration, Utc};
use herald_api::audit::{self, AuditLog, Record};
use serde_json::Value;

use crate::audit_writers::record_at;
use crate::support::TestApp;

fn record(name: &str, occurred_at: DateTime<Utc>) -> Record {
    record_at(format!("range-test-{name}"), occurred_at)
}

#[tokio::test]
async fn a_time_range_is_verified_by_position_so_an_out_of_order_time_is_no_gap() {
    // No retention: its first run, at start, would prune these records (dated 2020) if it
    // came after the first of them was written.
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let writer = AuditLog::start(app.pool.clone(), std::time::Duration::ZERO);
    let base = DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    // Written in this order: `late` was stamped after the range, as a replica that wrote it
    // just before the others' batch would have.
    for (name, offset) in [("a", 0), ("late", 10), ("b", 1), ("c", 2)] {
        let written = writer
            .record(record(name, base + Duration::seconds(offset)))
            .await;
        assert!(written);
    }
    let (from, to) = (Some(base), Some(base + Duration::seconds(5)));
    assert_eq!(audit::verify(&app.pool, from, to).await.unwrap(), (4, None));
    let url = "/api/v1/audit/verify?from=2020-01-01T00:00:00Z&to=2020-01-01T00:00:05Z";
    let check: Value = app.get(url, &app.admin_key).await.json().await.unwrap();
    assert_eq!(
        (check["ok"].as_bool(), check["checked"].as_i64()),
        (Some(true), Some(4)),
        "{check}"
    );

    let late: i64 = sqlx::query_scalar(
        "UPDATE request_log SET status = 500 WHERE request_id = 'range-test-late' RETURNING seq",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (_, broken) = audit::verify(&app.pool, from, to).await.unwrap();
    assert_eq!(
        broken.map(|b| b.0),
        Some(late),
        "the edited record inside the range"
    );
    let check: Value = app.get(url, &app.admin_key).await.json().await.unwrap();
    assert_eq!(check["first_broken_seq"], late);
}
