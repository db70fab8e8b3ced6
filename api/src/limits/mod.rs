//! Rate limits, per authenticated caller: `read` (GET and HEAD per minute), `write` (other
//! methods per minute) and `daily` (requests per UTC day), each from the key's own settings or
//! the configured defaults; and `unauthenticated`, per client IP, counted only on requests whose
//! credentials were refused. Minute policies use GCRA (`gcra`), so a burst can never overshoot;
//! the daily quota is an exact counter that is flushed to PostgreSQL every two seconds and read
//! back on first use, so it survives a restart. State is per replica (in memory) and pruned of
//! whatever no longer limits anyone every two seconds; `shared` moves it to Redis.

pub mod gcra;
mod headers;
pub mod shared;

pub use headers::{Policy, RateHeaders};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use herald_domain::api_key::RateLimit;
use sqlx::PgPool;

use crate::config::RateLimitsConfig;
use shared::SharedLimits;

const MINUTE: u128 = 60_000_000_000;

/// One policy as applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: &'static str,
    pub quota: u64,
    pub window_seconds: u64,
    pub allowed: bool,
    pub remaining: u64,
    /// Seconds until the quota is full again (allowed) or one more request is (refused).
    pub reset_seconds: u64,
}

pub struct RateLimiter {
    defaults: RateLimitsConfig,
    origin: Instant,
    tats: Mutex<HashMap<(String, &'static str), gcra::Tat>>,
    /// Per subject: the day, requests counted that day, and how many are not yet flushed.
    daily: Mutex<HashMap<String, (NaiveDate, u64, u64)>>,
    /// Limits shared through Redis, when configured.
    shared: Option<Arc<SharedLimits>>,
}

impl RateLimiter {
    /// `redis_url` (may be empty): share the limits of every replica through Redis.
    pub fn new(defaults: RateLimitsConfig, redis_url: &str) -> Self {
        let shared = (!redis_url.is_empty())
            .then(|| SharedLimits::new(redis_url).expect("redis_url is checked at start"))
            .map(Arc::new);
        Self {
            defaults,
            origin: Instant::now(),
            tats: Mutex::new(HashMap::new()),
            daily: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// Connects to Redis, when limits are shared (requests until then use local limits).
    pub async fn connect_shared(&self) {
        if let Some(shared) = &self.shared {
            shared.connect().await;
        }
    }

    /// Whether limits are shared through Redis, and whether Redis answers now.
    pub fn shared_status(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.healthy())
    }

    pub fn enabled(&self) -> bool {
        self.defaults.enabled
    }

    /// One per-minute policy; the request is counted only when `commit` (and it is allowed).
    fn minute_policy(
        &self,
        subject: &str,
        name: &'static str,
        quota: u64,
        now: u128,
        commit: bool,
    ) -> Applied {
        let mut tats = self.tats.lock().expect("rate limiter lock");
        let key = (subject.to_owned(), name);
        let tat = tats.get(&key).copied().unwrap_or(0);
        let (verdict, next) = gcra::check(tat, now, quota, MINUTE);
        if commit {
            tats.insert(key, next);
        }
        let pending = if verdict.allowed {
            verdict.reset_in
        } else {
            verdict.retry_in
        };
        Applied {
            name,
            quota,
            window_seconds: 60,
            allowed: verdict.allowed,
            remaining: verdict.remaining,
            reset_seconds: pending.div_ceil(1_000_000_000) as u64,
        }
    }

    /// Every policy of a caller with settings `own`: `read`, `write` and `daily`.
    pub fn policies(&self, own: RateLimit) -> Vec<Policy> {
        let d = &self.defaults;
        let policy = |name, quota: Option<u32>, default: u32, window_seconds| Policy {
            name,
            quota: u64::from(quota.unwrap_or(default)),
            window_seconds,
        };
        vec![
            policy("read", own.read_per_minute, d.read_per_minute, 60),
            policy("write", own.write_per_minute, d.write_per_minute, 60),
            policy("daily", own.daily_quota, d.daily_quota, 86_400),
        ]
    }

    /// Checks (and, when every policy allows it, counts) one request by `subject`.
    pub async fn check(
        &self,
        pool: &PgPool,
        subject: &str,
        write: bool,
        own: RateLimit,
    ) -> Vec<Applied> {
        let now = self.origin.elapsed().as_nanos() + MINUTE; // never 0, so TAT 0 means "fresh"
        let (name, quota) = if write {
            (
                "write",
                own.write_per_minute
                    .unwrap_or(self.defaults.write_per_minute),
            )
        } else {
            (
                "read",
                own.read_per_minute.unwrap_or(self.defaults.read_per_minute),
            )
        };
        let daily_quota = u64::from(own.daily_quota.unwrap_or(self.defaults.daily_quota));
        if let Some(applied) = self
            .check_shared(pool, subject, name, u64::from(quota), daily_quota)
            .await
        {
            return applied;
        }
        let mut daily = self.daily_policy(pool, subject, daily_quota).await;
        // A request refused by the daily quota does not spend the minute budget, and one
        // refused by the minute policy does not count against the day.
        let minute = self.minute_policy(subject, name, u64::from(quota), now, daily.allowed);
        if daily.allowed && minute.allowed {
            self.count_daily(subject);
        } else if daily.allowed {
            daily.remaining += 1;
        }
        vec![minute, daily]
    }

    /// The policies as Redis decides them, or `None` without Redis (or when it fails).
    async fn check_shared(
        &self,
        pool: &PgPool,
        subject: &str,
        name: &'static str,
        quota: u64,
        daily_quota: u64,
    ) -> Option<Vec<Applied>> {
        let shared = self.shared.as_ref()?;
        if !shared.connected() {
            let shared = shared.clone();
            tokio::spawn(async move { shared.connect().await });
            return None;
        }
        let known = self.daily_used(pool, subject).await;
        let today = Utc::now().date_naive();
        let reset = seconds_to_midnight();
        let verdict = shared
            .check(subject, name, quota, daily_quota, known, today, reset)
            .await?;
        if verdict.minute.allowed && verdict.daily_allowed {
            // This replica's share, added to the stored count so the quota survives restarts.
            self.count_daily(subject);
        }
        let daily = Applied {
            name: "daily",
            quota: daily_quota,
            window_seconds: 86_400,
            allowed: verdict.daily_allowed,
            remaining: daily_quota.saturating_sub(verdict.used_today),
            reset_seconds: reset,
        };
        Some(vec![verdict.minute, daily])
    }

    /// Checks the per-IP budget of a request whose credentials were refused.
    pub fn check_unauthenticated(&self, ip: &str) -> Applied {
        let now = self.origin.elapsed().as_nanos() + MINUTE;
        let quota = u64::from(self.defaults.unauthenticated_per_minute);
        self.minute_policy(&format!("ip:{ip}"), "unauthenticated", quota, now, true)
    }

    async fn daily_policy(&self, pool: &PgPool, subject: &str, quota: u64) -> Applied {
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
                let stored: i64 = sqlx::query_scalar("SELECT coalesce(max(used), 0) FROM rate_limit_daily WHERE subject = $1 AND day = $2")
                    .bind(subject)
                    .bind(today)
                    .fetch_one(pool)
                    .await
                    .unwrap_or(0);
                let mut daily = self.daily.lock().expect("lock");
                let entry = daily.entry(subject.to_owned()).or_insert((today, 0, 0));
                if entry.0 != today {
                    *entry = (today, 0, 0);
                }
                entry.1 = entry.1.max(stored as u64);
                entry.1
            }
        }
    }

    fn count_daily(&self, subject: &str) {
        let today = Utc::now().date_naive();
        let mut daily = self.daily.lock().expect("lock");
        let entry = daily.entry(subject.to_owned()).or_insert((today, 0, 0));
        if entry.0 != today {
            *entry = (today, 0, 0);
        }
        entry.1 += 1;
        entry.2 += 1;
    }

    /// Adds the counted requests to `rate_limit_daily`.
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
        for (subject, day, n) in pending {
            sqlx::query(
                "INSERT INTO rate_limit_daily (subject, day, used) VALUES ($1, $2, $3) \
                 ON CONFLICT (subject, day) DO UPDATE SET used = rate_limit_daily.used + excluded.used",
            )
            .bind(subject)
            .bind(day)
            .bind(n)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// Forgets what no longer limits anyone, so rotating client IPs or keys cannot grow the
    /// maps without end: a TAT in the past is the same as none (a full quota), and a past
    /// day's count is only needed until it is flushed.
    pub fn prune(&self) {
        self.prune_at(
            self.origin.elapsed().as_nanos() + MINUTE,
            Utc::now().date_naive(),
        );
    }

    fn prune_at(&self, now: u128, today: NaiveDate) {
        self.tats.lock().expect("lock").retain(|_, tat| *tat > now);
        let mut daily = self.daily.lock().expect("lock");
        daily.retain(|_, (day, _, unflushed)| *day == today || *unflushed > 0);
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
fn seconds_to_midnight() -> u64 {
    seconds_to_midnight_from(Utc::now())
}

fn seconds_to_midnight_from(now: chrono::DateTime<Utc>) -> u64 {
    let tomorrow = now.date_naive() + chrono::Days::new(1);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let millis = (midnight - now).num_milliseconds().max(1) as u64;
    millis.div_ceil(1000)
}

#[cfg(test)]
mod tests;
