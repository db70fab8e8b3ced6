//! Retention prunes the leading run of the request log that is older than the cutoff, and
//! nothing after the first record still within it: a record stamped long ago by a replica whose
//! clock was wrong, written after recent records, does not take them with it; a backlog larger
//! than one chunk goes chunk after chunk, the chain still verifying.

use chrono::{DateTime, Duration, Utc};
use herald_api::audit::{self, AuditLog};

use crate::audit_writers::record_at;
use crate::support::TestApp;

#[tokio::test]
async fn a_record_stamped_in_the_past_after_recent_ones_prunes_nothing_after_them() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    let now = Utc::now();
    let cutoff = now - Duration::days(90);
    // In log order: one record older than the cutoff, three recent ones, then one stamped
    // 100 days ago (a replica that booted with its clock behind).
    let stamps: [(&str, DateTime<Utc>); 5] = [
        ("old", now - Duration::days(200)),
        ("recent-0", now),
        ("recent-1", now),
        ("recent-2", now),
        ("skewed", now - Duration::days(100)),
    ];
    for (name, at) in stamps {
        assert!(
            writer
                .record(record_at(format!("retention-{name}"), at))
                .await
        );
    }

    assert_eq!(
        audit::prune(&app.pool, &crate::support::chain_key(), cutoff)
            .await
            .unwrap(),
        1,
        "only `old`"
    );
    let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM request_log ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let left: Vec<&str> = left
        .iter()
        .filter_map(|r| r.strip_prefix("retention-"))
        .collect();
    assert_eq!(left, ["recent-0", "recent-1", "recent-2", "skewed"]);
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (4, None)
    );

    // Once the recent records are old enough themselves, the run through `skewed` goes.
    let later = now + Duration::seconds(1);
    assert_eq!(
        audit::prune(&app.pool, &crate::support::chain_key(), later)
            .await
            .unwrap(),
        4
    );
}

#[tokio::test]
async fn a_backlog_larger_than_a_chunk_is_pruned_chunk_after_chunk() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    let old = Utc::now() - Duration::days(200);
    let written = futures::future::join_all((0..10_050).map(|n| {
        let writer = writer.clone();
        async move { writer.record(record_at(format!("backlog-{n}"), old)).await }
    }))
    .await;
    assert!(written.iter().all(|w| *w));
    assert!(writer.record(record_at("recent".into(), Utc::now())).await);

    let cutoff = Utc::now() - Duration::days(90);
    assert_eq!(
        audit::prune(&app.pool, &crate::support::chain_key(), cutoff)
            .await
            .unwrap(),
        10_050
    );
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (1, None)
    );
}

#[tokio::test]
async fn replicas_pruning_at_once_take_turns() {
    let app = TestApp::spawn_with(|c| c.audit.retention_days = 0).await;
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    let old = Utc::now() - Duration::days(200);
    for n in 0..3 {
        assert!(writer.record(record_at(format!("turns-{n}"), old)).await);
    }
    let cutoff = Utc::now() - Duration::days(90);
    // Another replica's chunk holds the pruning turn: two more replicas pruning now wait for
    // it (rather than reading the anchor it is about to move), then take turns.
    let mut other = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(audit::PRUNING_LOCK)
        .execute(&mut *other)
        .await
        .unwrap();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let pool = app.pool.clone();
            tokio::spawn(
                async move { audit::prune(&pool, &crate::support::chain_key(), cutoff).await },
            )
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        replicas.iter().all(|r| !r.is_finished()),
        "pruned while another replica's chunk held the turn"
    );
    other.commit().await.unwrap();
    let mut removed = 0;
    for replica in replicas {
        removed += replica.await.unwrap().expect("no break reported");
    }
    assert_eq!(removed, 3);
    assert_eq!(
        audit::verify(&app.pool, &crate::support::chain_key(), None, None)
            .await
            .unwrap(),
        (0, None)
    );
}
