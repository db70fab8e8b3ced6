//! Which statements a database was sent, read from `pg_stat_statements` (loaded by
//! `scripts/test-postgres.sh`). A route that must choose between two statements giving the same
//! answer (a page read window first, or bounded, or walked to) is checked here: its pages alone
//! could not tell the choices apart.

use sqlx::PgPool;

/// How many times `pool`'s database ran a statement whose text starts with `start`, counted
/// by PostgreSQL as each statement finishes. Each test has a database of its own, so other
/// tests' statements are never counted; the counts of databases dropped by earlier runs are
/// cleared by `scripts/test-postgres.sh`, so the table never fills and evicts a running
/// test's entry.
pub async fn runs(pool: &PgPool, start: &str) -> i64 {
    calls(pool, "starts_with(query, $1)", start).await
}

/// How many times `pool`'s database ran a statement whose text holds `fragment` (as `runs`).
pub async fn runs_containing(pool: &PgPool, fragment: &str) -> i64 {
    calls(pool, "strpos(query, $1) > 0", fragment).await
}

/// The calls of `pool`'s database's statements whose text `matches` (a condition on `query`
/// with `text` as `$1`).
async fn calls(pool: &PgPool, matches: &str, text: &str) -> i64 {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements \
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
            AND {matches}"
    ))
    .bind(text)
    .fetch_one(pool)
    .await
    .expect("pg_stat_statements is not loaded: start the cluster with scripts/test-postgres.sh")
}
