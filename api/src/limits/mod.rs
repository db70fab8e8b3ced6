//! Rate limits, per authenticated caller: `read` (GET and HEAD per minute), `write` (other
//! methods per minute) and `daily` (requests per UTC day), each from the key's own settings or
//! the configured defaults; and `unauthenticated`, per client IP, counted only on requests whose
//! credentials were refused, missing or never checked (input refused before any handler).
//! Minute policies use GCRA (`gcra`), so a burst can never overshoot; the daily quota (`daily`)
//! is an exact counter that each replica stores in PostgreSQL every two seconds and reads back
//! on first use, so it survives a restart. State is per replica (in memory) and pruned of
//! whatever no longer limits anyone every two seconds; `shared` moves it to Redis.

pub mod client;
mod daily;
pub mod gcra;
mod headers;
mod scripts;
pub mod shared;

pub use headers::{Policy, RateHeaders};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{NaiveDate, Utc};
use herald_domain::api_key::RateLimit;
use sqlx::PgPool;

use crate::config::RateLimitsConfig;
use daily::{next_midnight, DayCount};
use shared::{Decision, Known, SharedLimits};

const MINUTE: u128 = 60_000_000_000;

/// One policy as applied to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: &'static str,
    pub quota: u64,
    pub window_seconds: u64,
    pub allowed: bool,
    pub remaining: u64,
    /// When the quota is full again (allowed) or one more request is (refused): fixed when the
    /// policy is checked, so a response written later announces the same time.
    pub reset_at: SystemTime,
}

impl Applied {
    /// The whole seconds from now to `reset_at`, rounded up: what `Retry-After` says.
    pub fn reset_seconds(&self) -> u64 {
        whole_seconds(
            self.reset_at
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        )
    }
}

/// `duration` in whole seconds, rounded up (a reset is never announced early).
pub(crate) fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A subject's TAT for a minute policy, and the quota it was kept under.
type KeptTat = (gcra::Tat, u64);

pub struct RateLimiter {
    defaults: RateLimitsConfig,
    origin: Instant,
    /// Minute policies as decided here: without Redis, or while it does not answer.
    tats: Mutex<HashMap<(String, &'static str), KeptTat>>,
    /// Minute policies as Redis last answered them to this replica (`keep_shared_tat`), where
    /// its own decisions start from while Redis does not answer.
    shared_tats: Mutex<HashMap<(String, &'static str), KeptTat>>,
    /// Per subject and UTC day: the requests counted (`daily`).
    daily: Mutex<HashMap<(String, NaiveDate), DayCount>>,
    /// This process's name in `rate_limit_daily`, where each replica stores its own counts.
    replica: String,
    /// Limits shared through Redis, when configured.
    shared: Option<Arc<SharedLimits>>,
}

impl RateLimiter {
    /// `redis_url` (may be empty): share the limits of every replica through Redis.
    pub fn new(defaults: RateLimitsConfig, redis_url: &str) -> Self {
        let replica = uuid::Uuid::new_v4().to_string();
        let shared = (!redis_url.is_empty())
            .then(|| {
                let timeout = Duration::from_millis(defaults.redis_timeout_ms.into());
                SharedLimits::new(redis_url, &replica, timeout)
                    .expect("redis_url is checked at start")
            })
            .map(Arc::new);
        Self {
            defaults,
            origin: Instant::now(),
            tats: Mutex::new(HashMap::new()),
            shared_tats: Mutex::new(HashMap::new()),
            daily: Mutex::new(HashMap::new()),
            replica,
            shared,
        }
    }

    /// Connects to Redis and keeps asking it whether it answers, when limits are shared
    /// (requests until it first answers use local limits), until `cancel`.
    pub async fn watch_shared(&self, cancel: tokio_util::sync::CancellationToken) {
        if let Some(shared) = &self.shared {
            shared.watch(cancel).await;
        }
    }

    /// The connection to Redis, when limits are shared (the login limiter shares it).
    pub fn shared(&self) -> Option<Arc<SharedLimits>> {
        self.shared.clone()
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
        let key = (subject.to_owned(), name);
        let carried = |&(tat, kept): &KeptTat| gcra::rescale(tat, now, kept, quota, MINUTE);
        // Deciding alone while Redis does not answer: from what Redis last said, if later.
        let shared = match self.shared {
            Some(_) => {
                let shared_tats = self.shared_tats.lock().expect("rate limiter lock");
                shared_tats.get(&key).copied()
            }
            None => None,
        };
        let mut tats = self.tats.lock().expect("rate limiter lock");
        let own = tats.get(&key).copied();
        let tat = own
            .as_ref()
            .map_or(0, carried)
            .max(shared.as_ref().map_or(0, carried));
        let (mut verdict, next) = gcra::check(tat, now, quota, MINUTE);
        // A TAT carried down to a lower quota may be cut to one window (keys of one rotation
        // may differ in limits): the stored TAT stays, and a refusal announces when it lets
        // one through.
        let cut = [own, shared]
            .into_iter()
            .flatten()
            .filter_map(|(tat, kept)| gcra::wait_if_cut(tat, now, kept, quota, MINUTE))
            .max();
        if let (Some(wait), false) = (cut, verdict.allowed) {
            verdict.retry_in = verdict.retry_in.max(wait);
        }
        // Otherwise kept under this quota from now on, refused or not (a refusal leaves the TAT
        // as carried over), so the wait a refusal announces is the wait there is.
        if commit && (verdict.allowed || cut.is_none()) {
            tats.insert(key, (next, quota));
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
            reset_at: SystemTime::now() + Duration::from_nanos(pending as u64),
        }
    }

    /// Nanoseconds since this limiter began, plus a minute: never 0, so TAT 0 means "fresh".
    fn clock(&self) -> u128 {
        self.origin.elapsed().as_nanos() + MINUTE
    }

    /// Keeps the TAT Redis answered for `subject`'s minute policy (`ahead_us` past `sent`, when
    /// the request left for Redis, so never later than Redis's own): if Redis goes away, this
    /// replica's own decisions start from the budget spent (as far as it saw), not a full one.
    /// Kept apart from its own TATs, which it sends Redis as `ahead_us`: Redis's answers reach
    /// those only through a decision taken here, and Redis only ever raises its TAT to what it
    /// is sent, so one sent back changes nothing.
    fn keep_shared_tat(
        &self,
        subject: &str,
        name: &'static str,
        quota: u64,
        sent: u128,
        ahead_us: u64,
    ) {
        let tat = sent + u128::from(ahead_us) * 1_000;
        let mut tats = self.shared_tats.lock().expect("rate limiter lock");
        let kept = tats.entry((subject.to_owned(), name)).or_insert((0, quota));
        let own = gcra::rescale(kept.0, sent, kept.1, quota, MINUTE);
        *kept = (own.max(tat), quota);
    }

    /// How far ahead of now this replica's own TAT for `name` lies, in microseconds: the minute
    /// budget `subject` spent here while Redis did not answer, which Redis then starts from.
    fn ahead_us(&self, subject: &str, name: &'static str, quota: u64) -> u64 {
        let now = self.clock();
        let tats = self.tats.lock().expect("rate limiter lock");
        let tat = tats
            .get(&(subject.to_owned(), name))
            .map_or(0, |&(tat, kept)| {
                gcra::rescale(tat, now, kept, quota, MINUTE)
            });
        (tat.saturating_sub(now) / 1_000) as u64
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
        // Reads the stored count the first time this replica sees the subject today.
        self.daily_used(pool, subject).await;
        // The time of the decision, after any wait for the database: a request decided as of
        // when it arrived would find the budget as it was then, more of it come back.
        let now = self.clock();
        // A request refused by the daily quota does not spend the minute budget, and one
        // refused by the minute policy does not count against the day.
        let (minute, daily) = self.decide_day(subject, daily_quota, |commit| {
            self.minute_policy(subject, name, u64::from(quota), now, commit)
        });
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
        let shared = self.shared_connected()?;
        let today = Utc::now().date_naive();
        let midnight = next_midnight();
        let reset = whole_seconds(
            midnight
                .duration_since(SystemTime::now())
                .unwrap_or_default(),
        );
        let known = Known {
            minute_ahead_us: self.ahead_us(subject, name, quota),
            ..self.take_known(subject, today)
        };
        let ask = |seed| shared.check(subject, name, quota, daily_quota, seed, known, today, reset);
        // When the deciding call left for Redis, on this replica's clock.
        let mut sent = self.clock();
        let decided = match ask(None).await {
            Some(Decision::NeedsSeed) => {
                // Unreadable stored counts are not taken for a fresh day: decide locally.
                match self.shares_on(pool, subject, today).await {
                    Some(seed) => {
                        sent = self.clock();
                        ask(Some(&seed)).await
                    }
                    None => None,
                }
            }
            decided => decided,
        };
        let Some(Decision::Decided(verdict)) = decided else {
            self.unshared_back(subject, today, known.unshared);
            return None;
        };
        if verdict.minute.allowed && verdict.daily_allowed {
            // This replica's share, added to the stored count so the quota survives restarts.
            self.count_shared(subject, today);
        }
        if let Some(ahead) = verdict.minute_ahead_us {
            self.keep_shared_tat(subject, name, quota, sent, ahead);
        }
        // What Redis counted for everyone is where local limits start if Redis goes away; the
        // requests this replica allowed on its own are in it now.
        self.note_used(subject, today, verdict.used_today);
        let daily = Applied {
            name: "daily",
            quota: daily_quota,
            window_seconds: 86_400,
            allowed: verdict.daily_allowed,
            remaining: daily_quota.saturating_sub(verdict.used_today),
            reset_at: midnight,
        };
        Some(vec![verdict.minute, daily])
    }

    /// The shared limits, when configured and connected (connecting in the background when
    /// configured but not connected).
    fn shared_connected(&self) -> Option<&Arc<SharedLimits>> {
        let shared = self.shared.as_ref()?;
        if !shared.connected() {
            let shared = shared.clone();
            tokio::spawn(async move { shared.connect().await });
            return None;
        }
        Some(shared)
    }

    /// Checks the per-IP budget (`client::ip_subject`) of a request whose credentials were
    /// refused: through Redis when the limits are shared, else (or when Redis fails) in this
    /// replica's memory.
    pub async fn check_unauthenticated(&self, subject: &str) -> Applied {
        let quota = u64::from(self.defaults.unauthenticated_per_minute);
        if let Some(shared) = self.shared_connected() {
            let ahead = self.ahead_us(subject, "unauthenticated", quota);
            let sent = self.clock();
            if let Some((applied, after)) = shared
                .check_minute(subject, "unauthenticated", quota, ahead)
                .await
            {
                if let Some(after) = after {
                    self.keep_shared_tat(subject, "unauthenticated", quota, sent, after);
                }
                return applied;
            }
        }
        let now = self.clock();
        self.minute_policy(subject, "unauthenticated", quota, now, true)
    }

    /// Forgets what no longer limits anyone, so rotating client IPs or keys cannot grow the
    /// maps without end: a TAT in the past is the same as none (a full quota), and a past
    /// day's count is only needed until it is flushed.
    pub fn prune(&self) {
        self.prune_at(self.clock(), Utc::now().date_naive());
    }

    fn prune_at(&self, now: u128, today: NaiveDate) {
        for tats in [&self.tats, &self.shared_tats] {
            tats.lock().expect("lock").retain(|_, (tat, _)| *tat > now);
        }
        let mut daily = self.daily.lock().expect("lock");
        daily.retain(|(_, day), count| *day == today || count.pending());
    }
}

#[cfg(test)]
mod tests;
