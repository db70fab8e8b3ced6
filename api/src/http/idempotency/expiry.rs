//! Idempotency keys are kept for a day, as Stripe keeps them: a retry within 24 hours of the
//! first request gets its answer again; after that the key is forgotten and may be used anew.
//! A claim whose request never finished goes too (the same request takes it over well before,
//! once that call can no longer be running).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How long a key and its answer are kept.
const KEPT_FOR_HOURS: i32 = 24;

/// Deletes the keys claimed more than `KEPT_FOR_HOURS` ago; returns how many.
pub async fn forget_expired(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(KEPT_FOR_HOURS)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Forgets expired keys now and then every hour, until cancelled.
pub async fn forget_periodically(pool: PgPool, cancel: CancellationToken) {
    loop {
        match forget_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "forgot expired idempotency keys"),
            Err(error) => tracing::warn!(%error, "could not forget expired idempotency keys"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
