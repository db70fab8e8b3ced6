//! How often each API key is used, and when last: counted in memory per request (`count`) and
//! added to `api_key_usage` every two seconds, one statement for every key (`flush`). A flush
//! takes the uses it wrote off what is pending only once PostgreSQL has answered, so a flush
//! that fails, or is given up while it waits, loses nothing; flushes take turns, so two never
//! write the same uses. A flush whose answer never came (its connection broke, or it was given
//! up) may still have committed, and its counts are added, not stored as totals, so writing
//! them again would count them twice: such a flush is settled first by its id (migration 0032).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_domain::KeyId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest a flush's statement may run: PostgreSQL ends it (and rolls it back) after this,
/// and the flusher gives up waiting a second later, so a connection whose peer vanished does
/// not hold the loop, or shutdown, until TCP gives up. A flush's transaction left idle this long
/// (its client gone) is ended by PostgreSQL too, so settling it never waits longer.
const STATEMENT_TIME: Duration = Duration::from_secs(10);

/// Uses, per key: count and last time.
type Uses = Vec<(KeyId, (i64, DateTime<Utc>))>;

/// A flush whose outcome is unknown: its id and the uses it wrote.
struct Unsettled {
    id: Uuid,
    written: Uses,
}

/// Uses counted since they were last written: count and last time, per key.
#[derive(Default)]
pub struct KeyUsage {
    pending: Mutex<HashMap<KeyId, (i64, DateTime<Utc>)>>,
    /// Held by the flush that is writing, so the next one does not write the same uses; holds
    /// the last flush while its outcome is unknown.
    flushing: tokio::sync::Mutex<Option<Unsettled>>,
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
    /// for the next flush, which first settles whether this one committed after all.
    pub async fn flush(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut unsettled = self.flushing.lock().await;
        if let Some(last) = unsettled.as_ref() {
            if committed(pool, last.id).await? {
                self.take_off(&last.written);
            }
            *unsettled = None;
        }
        let written: Uses = self
            .pending
            .lock()
            .expect("usage lock")
            .iter()
            .map(|(id, uses)| (id.clone(), *uses))
            .collect();
        if written.is_empty() {
            return Ok(());
        }
        let id = Uuid::now_v7();
        *unsettled = Some(Unsettled {
            id,
            written: written.clone(),
        });
        match write(pool, id, &written).await {
            Ok(()) => {
                *unsettled = None;
                self.take_off(&written);
                Ok(())
            }
            // Answered: nothing was committed, so the uses are simply written again.
            Err(error @ sqlx::Error::Database(_)) => {
                *unsettled = None;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Takes uses that were written off what is pending.
    fn take_off(&self, written: &Uses) {
        let mut pending = self.pending.lock().expect("usage lock");
        for (id, (count, _)) in written {
            if let Entry::Occupied(mut entry) = pending.entry(id.clone()) {
                entry.get_mut().0 -= count;
                if entry.get().0 <= 0 {
                    entry.remove();
                }
            }
        }
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

/// One flush: its id, then its counts, in one transaction; ids older than a day are pruned.
async fn write(pool: &PgPool, id: Uuid, written: &Uses) -> sqlx::Result<()> {
    let ids: Vec<&str> = written.iter().map(|(id, _)| id.as_str()).collect();
    let counts: Vec<i64> = written.iter().map(|(_, (count, _))| *count).collect();
    let lasts: Vec<DateTime<Utc>> = written.iter().map(|(_, (_, last))| *last).collect();
    let mut tx = pool.begin().await?;
    bounded(&mut tx).await?;
    sqlx::query("INSERT INTO api_key_usage_flushes (id) VALUES ($1)")
        .bind(id)
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
    let day_ago = (Utc::now() - chrono::Duration::days(1)).timestamp().max(0) as u64;
    let day_ago = Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, day_ago, 0));
    sqlx::query("DELETE FROM api_key_usage_flushes WHERE id < $1")
        .bind(day_ago)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Whether the flush `id` committed. Its id is inserted now: refused, the flush had inserted it
/// and committed; inserted, the flush never committed and never will (its insert would be
/// refused). While the flush's transaction is still open the insert waits for it to end
/// (PostgreSQL ends it at the latest `STATEMENT_TIME` after its client went quiet).
async fn committed(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    bounded(&mut tx).await?;
    let inserted =
        sqlx::query("INSERT INTO api_key_usage_flushes (id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok(inserted == 0)
}

/// Limits the transaction's statements, and its idle time, to `STATEMENT_TIME`.
async fn bounded(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> sqlx::Result<()> {
    let limit = format!("{}ms", STATEMENT_TIME.as_millis());
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), \
                set_config('idle_in_transaction_session_timeout', $1, true)",
    )
    .bind(limit)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
