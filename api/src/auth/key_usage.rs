//! How often each API key is used, and when last: counted in memory per request (`count`) and
//! added to `api_key_usage` every two seconds, one statement for every key (`flush`). A flush
//! takes the uses it wrote off what is pending only once PostgreSQL has answered, so a flush
//! that fails, or is given up while it waits, loses nothing; flushes take turns, so two never
//! write the same uses.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_domain::KeyId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The longest a flush's statement may run: PostgreSQL ends it (and rolls it back) after this,
/// and the flusher gives up waiting a second later, so a connection whose peer vanished does
/// not hold the loop, or shutdown, until TCP gives up.
const STATEMENT_TIME: Duration = Duration::from_secs(10);

/// Uses counted since they were last written: count and last time, per key.
#[derive(Default)]
pub struct KeyUsage {
    pending: Mutex<HashMap<KeyId, (i64, DateTime<Utc>)>>,
    /// Held by the flush that is writing, so the next one does not write the same uses.
    flushing: tokio::sync::Mutex<()>,
}

impl KeyUsage {
    /// Counts one use of the key `id`, now.
    pub fn count(&self, id: &KeyId) {
        let now = Utc::now();
        let mut pending = self.pending.lock().expect("usage lock");
        let entry = pending.entry(id.clone()).or_insert((0, now));
        *entry = (entry.0 + 1, now);
    }

    /// Adds the pending uses to `api_key_usage` (other replicas add theirs), every key in one
    /// statement, and then takes them off what is pending; uses counted meanwhile stay. When
    /// the statement fails, or this future is dropped before PostgreSQL answers, they all stay
    /// for the next flush. (A flush whose answer is lost after its commit would write them
    /// twice: the counts are added, not stored as totals.)
    pub async fn flush(&self, pool: &PgPool) -> sqlx::Result<()> {
        let _turn = self.flushing.lock().await;
        let written: Vec<(KeyId, (i64, DateTime<Utc>))> = self
            .pending
            .lock()
            .expect("usage lock")
            .iter()
            .map(|(id, uses)| (id.clone(), *uses))
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = written.iter().map(|(id, _)| id.as_str()).collect();
        let counts: Vec<i64> = written.iter().map(|(_, (count, _))| *count).collect();
        let lasts: Vec<DateTime<Utc>> = written.iter().map(|(_, (_, last))| *last).collect();
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", STATEMENT_TIME.as_millis()))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_key_usage (key_id, usage_count, last_used_at) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) \
             ON CONFLICT (key_id) DO UPDATE SET \
               usage_count = api_key_usage.usage_count + excluded.usage_count, \
               last_used_at = greatest(api_key_usage.last_used_at, excluded.last_used_at)",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&lasts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut pending = self.pending.lock().expect("usage lock");
        for (id, (count, _)) in written {
            if let Entry::Occupied(mut entry) = pending.entry(id) {
                entry.get_mut().0 -= count;
                if entry.get().0 <= 0 {
                    entry.remove();
                }
            }
        }
        Ok(())
    }

    /// Flushes every two seconds until cancelled, and once more on the way out; a flush that
    /// has no answer a second after PostgreSQL should have ended it is given up (its uses
    /// stay pending).
    pub async fn flush_periodically(&self, pool: PgPool, cancel: CancellationToken) {
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            };
            let bound = STATEMENT_TIME + Duration::from_secs(1);
            match tokio::time::timeout(bound, self.flush(&pool)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "could not record API key usage"),
                Err(_) => tracing::warn!("could not record API key usage: no answer in {bound:?}"),
            }
            if stop {
                return;
            }
        }
    }
}
