//! The daily quota: an exact count per subject and UTC day, kept in memory, flushed to
//! PostgreSQL (`rate_limit_daily`, one row per subject and day that every replica adds its
//! share to) every two seconds, and read back the first time a replica sees a subject in a day,
//! so it survives restarts and seeds Redis when Redis has no count.

use chrono::{NaiveDate, Utc};
use sqlx::PgPool;

use super::{Applied, RateLimiter};

impl RateLimiter {
    pub(super) async fn daily_policy(&self, pool: &PgPool, subject: &str, quota: u64) -> Applied {
        let used = self.daily_used(pool, subject).await;
        let reset = seconds_to_midnight();
        Applied {
            name: "daily",
            quota,
            window_seconds: 86_400,
            allowed: used < quota,
            remaining: quota.saturating_sub(used + 1),
            reset_seconds: reset,
        }
    }

    /// Raises this replica's count for today to `used` (what Redis counted for every replica),
    /// so its own limits start from there if Redis fails.
    pub(super) fn note_used(&self, subject: &str, used: u64) {
        let today = Utc::now().date_naive();
        let mut daily = self.daily.lock().expect("lock");
        let entry = daily.entry(subject.to_owned()).or_insert((today, 0, 0));
        if entry.0 == today {
            entry.1 = entry.1.max(used);
        }
    }

    /// The day's count every replica has flushed to PostgreSQL.
    pub(super) async fn stored_daily(&self, pool: &PgPool, subject: &str, day: NaiveDate) -> u64 {
        let stored: sqlx::Result<i64> = sqlx::query_scalar(
            "SELECT coalesce(max(used), 0) FROM rate_limit_daily WHERE subject = $1 AND day = $2",
        )
        .bind(subject)
        .bind(day)
        .fetch_one(pool)
        .await;
        stored.map_or_else(
            |error| {
                tracing::warn!(%error, "could not read the stored daily count; starting from 0");
                0
            },
            |n| n.max(0) as u64,
        )
    }

    /// This replica's requests of today not yet flushed.
    pub(super) fn unflushed(&self, subject: &str) -> u64 {
        let today = Utc::now().date_naive();
        let daily = self.daily.lock().expect("lock");
        daily
            .get(subject)
            .filter(|(day, _, _)| *day == today)
            .map_or(0, |(_, _, unflushed)| *unflushed)
    }

    /// Requests `subject` made today on every replica, as far as this one can tell: what all
    /// have flushed plus its own unflushed share (other replicas' last two seconds may be
    /// missing), or its own count if that is higher.
    pub async fn used_today(&self, pool: &PgPool, subject: &str) -> u64 {
        let own = self.daily_used(pool, subject).await;
        let today = Utc::now().date_naive();
        let everyone = self.stored_daily(pool, subject, today).await + self.unflushed(subject);
        own.max(everyone)
    }

    /// Requests counted against `subject`'s daily quota today: this replica's count, which
    /// starts from the stored one the first time it sees the subject in a day.
    pub async fn daily_used(&self, pool: &PgPool, subject: &str) -> u64 {
        let today = Utc::now().date_naive();
        let known = self
            .daily
            .lock()
            .expect("lock")
            .get(subject)
            .filter(|(day, _, _)| *day == today)
            .map(|(_, used, _)| *used);
        match known {
            Some(used) => used,
            None => {
                let stored = self.stored_daily(pool, subject, today).await;
                let mut daily = self.daily.lock().expect("lock");
                let entry = daily.entry(subject.to_owned()).or_insert((today, 0, 0));
                if entry.0 != today {
                    *entry = (today, 0, 0);
                }
                entry.1 = entry.1.max(stored);
                entry.1
            }
        }
    }

    pub(super) fn count_daily(&self, subject: &str) {
        let today = Utc::now().date_naive();
        let mut daily = self.daily.lock().expect("lock");
        let entry = daily.entry(subject.to_owned()).or_insert((today, 0, 0));
        if entry.0 != today {
            *entry = (today, 0, 0);
        }
        entry.1 += 1;
        entry.2 += 1;
    }

    /// Adds the counted requests to `rate_limit_daily`, in one statement; when it fails the
    /// counts stay pending for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> sqlx::Result<()> {
        let pending: Vec<(String, NaiveDate, i64)> = {
            let mut daily = self.daily.lock().expect("lock");
            daily
                .iter_mut()
                .filter(|(_, (_, _, unflushed))| *unflushed > 0)
                .map(|(subject, (day, _, unflushed))| {
                    let n = std::mem::take(unflushed) as i64;
                    (subject.clone(), *day, n)
                })
                .collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        let subjects: Vec<&str> = pending.iter().map(|p| p.0.as_str()).collect();
        let days: Vec<NaiveDate> = pending.iter().map(|p| p.1).collect();
        let counts: Vec<i64> = pending.iter().map(|p| p.2).collect();
        let written = sqlx::query(
            "INSERT INTO rate_limit_daily (subject, day, used) \
             SELECT * FROM unnest($1::text[], $2::date[], $3::bigint[]) \
             ON CONFLICT (subject, day) DO UPDATE SET used = rate_limit_daily.used + excluded.used",
        )
        .bind(&subjects)
        .bind(&days)
        .bind(&counts)
        .execute(pool)
        .await;
        if written.is_err() {
            // Nothing was written (one statement): keep the counts for the next flush.
            let mut daily = self.daily.lock().expect("lock");
            for (subject, day, n) in &pending {
                if let Some(entry) = daily.get_mut(subject).filter(|e| e.0 == *day) {
                    entry.2 += *n as u64;
                }
            }
        }
        written.map(drop)
    }

    /// Flushes every two seconds until cancelled, and once more on the way out.
    pub async fn flush_periodically(
        self: std::sync::Arc<Self>,
        pool: PgPool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
            };
            if let Err(error) = self.flush(&pool).await {
                tracing::warn!(%error, "could not record daily quota use");
            }
            self.prune();
            if stop {
                return;
            }
        }
    }
}

/// Seconds until the next UTC midnight, rounded up (so "reset" is never announced early).
pub(super) fn seconds_to_midnight() -> u64 {
    seconds_to_midnight_from(Utc::now())
}

pub(super) fn seconds_to_midnight_from(now: chrono::DateTime<Utc>) -> u64 {
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let millis = (midnight - now).num_milliseconds().max(1) as u64;
    millis.div_ceil(1000)
}
