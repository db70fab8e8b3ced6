//! Verifying a time range of the request log: the range is widened to every position between
//! the first and the last record it names, since positions and times can disagree a little
//! (replicas stamp a record's time before their batches get positions), and a record inside
//! that is edited is still caught. A range whose first records retention pruned is verified
//! from the anchor, and verification running while the pruner works reads no gap. Records
//! deleted from a range's end, or all of a range's records, are reported.

use chrono::{DateTime, Duration, Utc};
use herald_api::audit::{self, AuditLog, Record};
use serde_json::Value;

use crate::audit_writers::record_at;
use crate::support::TestApp;

fn record(name: &str, occurred_at: DateTime<Utc>) -> Record {
    record_at(format!("range-test-{name}"), occurred_at)
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test]
async fn a_time_range_is_verified_by_position_so_an_out_of_order_time_is_no_gap() {
    // No retention: its first run, at start, would prune these records (dated 2020) if it
    // came after the first of them was written.
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    let base = utc("2020-01-01T00:00:00Z");
    // Written in this order: `late` was stamped after the range, as a replica that wrote it
    // just before the others' batch would have.
    for (name, offset) in [("a", 0), ("late", 10), ("b", 1), ("c", 2)] {
        let written = writer
            .record(record(name, base + Duration::seconds(offset)))
            .await;
        assert!(written);
    }
    let (from, to) = (Some(base), Some(base + Duration::seconds(5)));
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), from, to)
            .await
            .unwrap(),
        (4, None)
    );
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
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), from, to)
        .await
        .unwrap();
    assert_eq!(
        broken.map(|b| b.0),
        Some(late),
        "the edited record inside the range"
    );
    let check: Value = app.get(url, &app.admin_key).await.json().await.unwrap();
    assert_eq!(check["first_broken_seq"], late);
}

/// Writes one record a second from `base`, named `prefix-0`, `prefix-1`, …, in that order.
async fn write_records(app: &TestApp, base: DateTime<Utc>, prefix: &str, count: i64) {
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    for n in 0..count {
        let written = writer
            .record(record(
                &format!("{prefix}-{n}"),
                base + Duration::seconds(n),
            ))
            .await;
        assert!(written);
    }
}

#[tokio::test]
async fn a_range_whose_first_records_were_pruned_is_verified_from_the_anchor() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let base = utc("2021-03-01T00:00:00Z");
    write_records(&app, base, "pruned", 5).await;
    let pruned = audit::prune(
        &app.pool,
        &crate::support::chain_key(),
        base + Duration::milliseconds(1500),
    )
    .await
    .unwrap();
    assert_eq!(pruned, 2, "the records at 0 s and 1 s");

    // The range still names its pruned start; what is left links to the anchor.
    let range = (Some(base), Some(base + Duration::seconds(5)));
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), range.0, range.1)
            .await
            .unwrap(),
        (3, None)
    );
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (3, None)
    );
    let url = "/api/v1/audit/verify?from=2021-03-01T00:00:00Z&to=2021-03-01T00:00:05Z";
    let check: Value = app.get(url, &app.admin_key).await.json().await.unwrap();
    assert_eq!(
        (check["ok"].as_bool(), check["checked"].as_i64()),
        (Some(true), Some(3))
    );

    // The first record after the anchor is checked against it, not taken on trust.
    let first: i64 = sqlx::query_scalar(
        "UPDATE request_log SET status = 404 WHERE request_id = 'range-test-pruned-2' RETURNING seq",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), range.0, range.1)
        .await
        .unwrap();
    assert_eq!(broken.map(|b| b.0), Some(first));

    // Without the anchor, the pruned records read as removed.
    sqlx::query("DELETE FROM request_log_anchor")
        .execute(&app.pool)
        .await
        .unwrap();
    let broken = (1, "records 1 to 2 are missing".to_string());
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (0, Some(broken))
    );
}

#[tokio::test]
async fn retention_pruning_while_the_log_is_verified_never_reads_as_a_gap() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let base = utc("2021-04-01T00:00:00Z");
    let count = 300;
    write_records(&app, base, "racing", count).await;
    // Prune the oldest record, one at a time, while verification runs over and over.
    let pruner = {
        let pool = app.pool.clone();
        tokio::spawn(async move {
            for n in 0..count - 1 {
                let cutoff = base + Duration::seconds(n) + Duration::milliseconds(500);
                assert_eq!(
                    audit::prune(&pool, &crate::support::chain_key(), cutoff)
                        .await
                        .unwrap(),
                    1
                );
            }
        })
    };
    let mut verified = 0;
    while !pruner.is_finished() {
        let (checked, broken) = audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap();
        assert_eq!(
            broken, None,
            "after {verified} verifications ({checked} records)"
        );
        verified += 1;
    }
    pruner.await.unwrap();
    assert!(verified > 1, "verification ran while records were pruned");
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (1, None)
    );
}

#[tokio::test]
async fn newest_records_deleted_after_usage_counted_them_are_reported_at_once() {
    let app = TestApp::spawn().await;
    for _ in 0..6 {
        app.get("/api/v1/jobs", &app.admin_key).await;
    }
    herald_projections::usage_count::count(&app.pool)
        .await
        .unwrap();
    let (_, intact) =
        herald_api::audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap();
    assert_eq!(intact, None, "a counted, intact log verifies");
    let last: i64 = sqlx::query_scalar("SELECT max(seq) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // The newest two go: nothing was written after them, yet the check reports them.
    sqlx::query("DELETE FROM request_log WHERE seq >= $1")
        .bind(last - 1)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, broken) =
        herald_api::audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap();
    let (seq, what) = broken.expect("reported");
    assert_eq!(seq, last - 1);
    assert_eq!(what, format!("records {} to {last} are missing", last - 1));
    // So does a range that ends later than now; one that ends before them is intact.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let (_, reaching) =
        herald_api::audit::verify(&app.pool, &crate::support::chain_key(), None, Some(later))
            .await
            .unwrap();
    assert_eq!(reaching.map(|(seq, _)| seq), Some(last - 1));
    let before = chrono::Utc::now() - chrono::Duration::hours(1);
    let (_, earlier) =
        herald_api::audit::verify(&app.pool, &crate::support::chain_key(), None, Some(before))
            .await
            .unwrap();
    assert_eq!(earlier, None);

    // All of it goes: an empty log is no proof of an empty history.
    sqlx::query("DELETE FROM request_log")
        .execute(&app.pool)
        .await
        .unwrap();
    let (checked, broken) =
        herald_api::audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap();
    assert_eq!(checked, 0);
    assert_eq!(broken.map(|(seq, _)| seq), Some(1));
}

/// What the route and the command say about `from..to`: the first broken seq, if any.
async fn broken_in(app: &TestApp, from: &str, to: &str) -> (Option<i64>, Option<i64>) {
    let url = format!("/api/v1/audit/verify?from={from}&to={to}");
    let check: Value = app.get(&url, &app.admin_key).await.json().await.unwrap();
    let args = ["audit", "verify", "--from", from, "--to", to];
    let cli = crate::projections::herald(&app.database_url, &args).await;
    let said = String::from_utf8_lossy(&cli.stdout).to_string();
    let cli_seq = (!cli.status.success()).then(|| {
        let at = said.split("broken at record ").nth(1).expect(&said);
        at.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    });
    (check["first_broken_seq"].as_i64(), cli_seq)
}

#[tokio::test]
async fn records_deleted_from_a_ranges_end_or_a_whole_range_are_reported() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let base = utc("2021-05-01T00:00:00Z");
    write_records(&app, base, "ends", 12).await;
    let seq = |n: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT seq FROM request_log WHERE request_id = $1")
                .bind(format!("range-test-ends-{n}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let (third, sixth) = (seq(3).await, seq(6).await);
    let (early, middle) = (
        ("2021-05-01T00:00:00Z", "2021-05-01T00:00:05Z"),
        ("2021-05-01T00:00:06Z", "2021-05-01T00:00:09Z"),
    );
    assert_eq!(broken_in(&app, early.0, early.1).await, (None, None));

    // The range's last two records (3 s and 4 s) go: what is left of it still links up.
    sqlx::query("DELETE FROM request_log WHERE seq IN ($1, $1 + 1)")
        .bind(third)
        .execute(&app.pool)
        .await
        .unwrap();
    let reported = broken_in(&app, early.0, early.1).await;
    assert_eq!(reported, (Some(third), Some(third)));

    // Every record of a later range (6 s to 8 s) goes: nothing is left in it to check.
    sqlx::query("DELETE FROM request_log WHERE seq BETWEEN $1 AND $1 + 2")
        .bind(sixth)
        .execute(&app.pool)
        .await
        .unwrap();
    let reported = broken_in(&app, middle.0, middle.1).await;
    assert_eq!(reported, (Some(sixth), Some(sixth)));
    // A range in which nothing happened, with its neighbours intact, is no gap.
    let (quiet, _) = broken_in(&app, "2021-05-01T00:00:09.5Z", "2021-05-01T00:00:10Z").await;
    assert_eq!(quiet, None);
}

#[tokio::test]
async fn a_range_reaching_now_checks_the_logs_end_even_if_an_earlier_stamp_follows_it() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let base = utc("2021-06-01T00:00:00Z");
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    // Written in this order: the last two were stamped before the second, as another replica's
    // batch would have them.
    for (name, offset) in [("a", 0), ("b", 2000), ("c", 1000), ("d", 1200)] {
        let written = writer
            .record(record(name, base + Duration::milliseconds(offset)))
            .await;
        assert!(written);
    }
    herald_projections::usage_count::count(&app.pool)
        .await
        .unwrap();
    let newest: i64 = sqlx::query_scalar("SELECT max(seq) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let from = Some(base + Duration::milliseconds(1500));
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), from, None)
            .await
            .unwrap()
            .1,
        None
    );

    // The newest record goes: the range (only `b`) is followed by `c`, which still links.
    sqlx::query("DELETE FROM request_log WHERE seq = $1")
        .bind(newest)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), from, None)
        .await
        .unwrap();
    assert_eq!(broken.map(|(seq, _)| seq), Some(newest));
    // So does a range after every record, which has none.
    let after = Some(base + Duration::seconds(10));
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), after, None)
        .await
        .unwrap();
    assert_eq!(broken.map(|(seq, _)| seq), Some(newest));
}
