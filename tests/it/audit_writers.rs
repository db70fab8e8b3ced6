//! The request log's writer and usage counting, below the HTTP layer: two writers (as two
//! replicas would) appending at once keep one unbroken chain, and usage counts every record
//! exactly once, including records that retention prunes before the periodic count reached them;
//! and the writer's connection commits durably whatever the cluster's `synchronous_commit`, under
//! a name of its own.

use futures::future::join_all;
use herald_api::audit::{self, AuditLog, Record};
use herald_projections::usage_count;

use crate::support::TestApp;

fn record(n: usize) -> Record {
    record_at(format!("writer-test-{n}"), chrono::Utc::now())
}

/// A successful `GET /api/v1/jobs` record, before the writer numbers and chains it.
pub(crate) fn record_at(request_id: String, occurred_at: chrono::DateTime<chrono::Utc>) -> Record {
    Record {
        seq: 0,
        occurred_at,
        request_id,
        actor_type: None,
        actor_id: None,
        project_id: None,
        route: "/api/v1/jobs".into(),
        method: "GET".into(),
        path: "/api/v1/jobs".into(),
        status: 200,
        latency_us: 1,
        request_bytes: 0,
        response_bytes: 2,
        client_ip: None,
        user_agent: None,
        outcome: "success".into(),
        error_code: None,
        chain_format: audit::CHAIN_FORMAT,
        prev_hash: String::new(),
        hash: String::new(),
    }
}

#[tokio::test]
async fn two_writers_appending_at_once_keep_one_chain() {
    let app = TestApp::spawn().await;
    let writers = [
        AuditLog::start(app.pool.clone(), crate::support::chain_key(), None),
        AuditLog::start(app.pool.clone(), crate::support::chain_key(), None),
    ];
    // Hold the next position with an uncommitted record, so both writers' first batches wait
    // on it for the same positions; once it is rolled back, one batch takes them and the
    // primary key refuses the other, which is chained again after it.
    let holder = hold_next_position(&app).await;
    let waiting: Vec<_> = (0..2)
        .map(|w| {
            let writer = writers[w].clone();
            tokio::spawn(async move { writer.record(record(w)).await })
        })
        .collect();
    // Briefly: an open transaction id holds back the projections of every test's database.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    holder.rollback().await.unwrap();
    for call in waiting {
        assert!(call.await.unwrap(), "a refused batch is chained again");
    }
    // Then many at once: each writer's batches are chained onto the end it last saw, and the
    // other writer keeps moving that end.
    let calls = (2..400).map(|n| writers[n % 2].record(record(n)));
    let committed = join_all(calls).await;
    assert!(committed.iter().all(|ok| *ok), "every record was committed");
    assert_whole_chain_holds(&app, "writer-test-", 400).await;
}

/// Takes the request log's next position with an uncommitted record, so writers' batches wait
/// on it for the same positions; once it is rolled back, one batch takes them and the primary
/// key refuses the others.
pub(crate) async fn hold_next_position(
    app: &TestApp,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO request_log (seq, occurred_at, request_id, route, method, path, status, \
           latency_us, request_bytes, response_bytes, outcome, hash) \
         SELECT coalesce(max(seq), 0) + 1, now(), 'holder', '/', 'GET', '/', 200, 0, 0, 0, 'success', '' \
           FROM request_log",
    )
    .execute(&mut *holder)
    .await
    .unwrap();
    holder
}

/// The chain verifies unbroken and holds exactly `count` distinct records whose request id
/// starts with `prefix`.
pub(crate) async fn assert_whole_chain_holds(app: &TestApp, prefix: &str, count: i64) {
    let (checked, broken) = audit::verify(&app.pool, &crate::support::chain_key(), None, None)
        .await
        .unwrap();
    assert_eq!(broken, None);
    let ours: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT request_id) FROM request_log WHERE starts_with(request_id, $1)",
    )
    .bind(prefix)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(ours, count);
    assert!(checked as i64 >= count, "{checked}");
}

/// Forgets every count, as if the periodic counter had never run.
async fn forget_counts(app: &TestApp) {
    let mut tx = app.pool.begin().await.unwrap();
    // Taking turns with the server's own counter, as another counter would.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(usage_count::COUNTING_LOCK)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE usage_checkpoint SET seq = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM usage_hourly")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn counted(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(requests), 0)::bigint FROM usage_hourly")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn usage_counts_each_record_once_even_when_retention_prunes_it() {
    let app = TestApp::spawn().await;
    for _ in 0..10 {
        app.get("/api/v1/jobs", &app.admin_key).await;
    }
    forget_counts(&app).await;

    // Two counts at once (two replicas; the server's own counter may run as well) count each
    // record once.
    let (first, second) =
        tokio::join!(usage_count::count(&app.pool), usage_count::count(&app.pool));
    first.unwrap();
    second.unwrap();
    let last = last_seq(&app).await;
    assert_eq!(
        counted(&app).await,
        last,
        "everything logged is counted, once"
    );
    let checkpoint: i64 = sqlx::query_scalar("SELECT seq FROM usage_checkpoint")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(checkpoint, last);

    // Forget the counts again; retention counts what it prunes before it prunes it.
    forget_counts(&app).await;
    let removed = audit::prune(&app.pool, &crate::support::chain_key(), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(removed as i64, last, "the whole log was pruned");
    let anchor: i64 = sqlx::query_scalar("SELECT seq FROM request_log_anchor")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(anchor, last);
    assert_eq!(
        counted(&app).await,
        last,
        "every pruned record was counted, once"
    );
}

async fn last_seq(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT max(seq) FROM request_log")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn deleting_the_newest_record_is_caught_even_by_a_restarted_writer() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        app.get("/api/v1/jobs", &app.admin_key).await;
    }
    usage_count::count(&app.pool).await.unwrap();
    let last = last_seq(&app).await;
    sqlx::query("DELETE FROM request_log WHERE seq = $1")
        .bind(last)
        .execute(&app.pool)
        .await
        .unwrap();
    // A writer that has not seen the log before (a restarted server) appends after the gap
    // instead of reusing the deleted record's position.
    let writer = AuditLog::start(app.pool.clone(), crate::support::chain_key(), None);
    assert!(writer.record(record(0)).await);
    let (_, broken) = audit::verify(&app.pool, &crate::support::chain_key(), None, None)
        .await
        .unwrap();
    assert_eq!(broken.map(|(seq, _)| seq), Some(last), "reported missing");
}

#[tokio::test]
async fn a_record_that_cannot_be_written_in_time_withholds_the_answer_and_is_not_kept() {
    let app = TestApp::spawn().await;
    // A first call, so the writer's statement is prepared and the one below waits in its
    // execution (a statement that would still commit once the lock is released).
    app.get("/api/v1/jobs", &app.admin_key).await;
    // Every write to the request log waits behind this lock until it is released.
    let blocker = app.block_writes_to("request_log").await;
    let started = std::time::Instant::now();
    let refused = app.get("/api/v1/jobs", &app.admin_key).await;
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let request_id = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // It is still an answer to this request: its id, its limits and the usual headers.
    for header in [
        "x-ratelimit-limit",
        "ratelimit-policy",
        "x-content-type-options",
    ] {
        assert!(refused.headers().contains_key(header), "{header} missing");
    }
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "AUDIT_UNAVAILABLE");
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    blocker.rollback().await.unwrap();

    // The database ended the timed-out batch: its record was not committed afterwards.
    let answered = app.get("/api/v1/jobs", &app.admin_key).await;
    assert_eq!(answered.status(), reqwest::StatusCode::OK);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM request_log WHERE request_id = $1")
        .bind(&request_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "the withheld answer has no record");
}

/// Backends of this test's database that wait for a lock: (all, those holding a transaction id).
async fn lock_waiters(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(DISTINCT a.pid), count(DISTINCT a.pid) FILTER (WHERE a.backend_xid IS NOT NULL) \
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
          WHERE NOT l.granted AND a.datname = current_database()",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn counting_usage_holds_back_no_projection_while_it_waits() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/jobs", &app.admin_key).await;
    // The periodic count (every second) must wait to write its counts.
    let blocker = app.block_writes_to("usage_hourly").await;
    app.get("/api/v1/jobs", &app.admin_key).await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (waiting, holding_an_id) = lock_waiters(&app).await;
    blocker.rollback().await.unwrap();
    assert!(waiting >= 1, "the count waits for the lock");
    // An open transaction id would hold back every projection's horizon, cluster-wide.
    assert_eq!(holding_an_id, 0, "the waiting count holds a transaction id");
}

async fn show(conn: &mut sqlx::PgConnection, setting: &str) -> String {
    sqlx::query_scalar(&format!("SHOW {setting}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_writer_commits_durably_even_on_a_cluster_that_does_not() {
    let app = TestApp::spawn().await;
    let mut pooled = app.pool.acquire().await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut *pooled)
        .await
        .unwrap();
    let set =
        |value: &str| format!("ALTER DATABASE \"{database}\" SET synchronous_commit = {value}");
    // With synchronous_commit=off a commit is acknowledged before its WAL is flushed; the
    // writer's own connection waits for the local flush all the same.
    sqlx::query(&set("off"))
        .execute(&mut *pooled)
        .await
        .unwrap();
    let mut writer = audit::writer_connection(&app.pool).await.unwrap();
    assert_eq!(show(&mut writer, "synchronous_commit").await, "local");
    assert_eq!(show(&mut writer, "statement_timeout").await, "10s");

    // Where the cluster commits durably, the writer keeps that value for its session, so the
    // cluster switched to `off` later (a configuration reload) does not reach it.
    sqlx::query(&set("on")).execute(&mut *pooled).await.unwrap();
    let mut durable = audit::writer_connection(&app.pool).await.unwrap();
    assert_eq!(show(&mut durable, "synchronous_commit").await, "on");
    let source: String =
        sqlx::query_scalar("SELECT source FROM pg_settings WHERE name = 'synchronous_commit'")
            .fetch_one(&mut durable)
            .await
            .unwrap();
    assert_eq!(source, "session");

    // A stricter setting is kept, not weakened to `local`.
    sqlx::query(&set("remote_apply"))
        .execute(&mut *pooled)
        .await
        .unwrap();
    let mut writer = audit::writer_connection(&app.pool).await.unwrap();
    assert_eq!(
        show(&mut writer, "synchronous_commit").await,
        "remote_apply"
    );
}

#[tokio::test]
async fn the_writer_s_backend_is_named_apart_from_the_pool_s() {
    let app = TestApp::spawn().await;
    let mut pooled = app.pool.acquire().await.unwrap();
    assert_eq!(show(&mut pooled, "application_name").await, "herald");
    let mut writer = audit::writer_connection(&app.pool).await.unwrap();
    assert_eq!(
        show(&mut writer, "application_name").await,
        "herald audit writer"
    );

    // A name the database URL gives is kept, and the writer's is made from it.
    let url = format!("{}?application_name=replica-2", app.database_url);
    let named = herald_api::startup::connect(&url, 2).await.unwrap();
    let mut pooled = named.acquire().await.unwrap();
    assert_eq!(show(&mut pooled, "application_name").await, "replica-2");
    let mut writer = audit::writer_connection(&named).await.unwrap();
    assert_eq!(
        show(&mut writer, "application_name").await,
        "replica-2 audit writer"
    );
}
