//! Reading the global log page by page (projection runners, the webhook projector, event
//! streams): a reader far behind must get each page as the next entries of the
//! `(tx_id, global_position)` index, never by scanning and sorting everything after its
//! position. (Pages were once ordered by an output column that no index is ordered by, which
//! made catching up quadratic, and statistics taken while the log was empty cost job
//! submissions about 40 % of their throughput.)

use serde_json::Value;
use sqlx::PgPool;

use crate::support::db::fresh_database;

/// The plan PostgreSQL chooses for `statement` with these parameters, as JSON text.
async fn plan(pool: &PgPool, statement: &str, wanted: Option<&[&str]>) -> String {
    let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
    let query = sqlx::query_scalar::<_, Value>(&explain)
        .bind(0_i64)
        .bind(0_i64)
        .bind(500_i64);
    let query = match wanted {
        Some(types) => query.bind(types.to_vec()),
        None => query,
    };
    query.fetch_one(pool).await.unwrap().to_string()
}

/// Both statements walk the index and stop after a page, with no sort.
async fn assert_pages_walk_the_index(pool: &PgPool, reader: &str) {
    let statements = [
        (herald_store::log::read_after_statement(), None),
        (herald_store::log::read_page_statement(), Some(&["job"][..])),
    ];
    for (statement, wanted) in statements {
        let plan = plan(pool, &statement, wanted).await;
        assert!(
            plan.contains("\"Index Name\":\"events_tx_order_idx\""),
            "{reader}: a page must be read through the (tx_id, global_position) index: {plan}"
        );
        assert!(
            !plan.contains("\"Node Type\":\"Sort\"")
                && !plan.contains("\"Node Type\":\"Incremental Sort\""),
            "{reader}: a page must not sort the log after the position: {plan}"
        );
    }
}

#[tokio::test]
async fn a_reader_far_behind_reads_each_page_through_the_index() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata) \
         SELECT 'job', 'job-' || n, 1, 'job.queued', '1', '{}', '{}' \
           FROM generate_series(1, 20000) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Statistics that know a reader at position zero is behind every event: sorting them all
    // looks cheap per page to the planner, unless the index already gives the order.
    sqlx::query("ANALYZE events").execute(&pool).await.unwrap();
    assert_pages_walk_the_index(&pool, "a reader at position zero").await;
}
