//! Rate limits shared by every replica through Redis (when `REDIS_URL` is set). One Lua script
//! per request decides the minute policy (GCRA, on Redis's own clock, so replicas need not
//! agree on time) and the daily quota together, and counts the request only when both allow
//! it: atomic, so two replicas together never allow more than the limit. The day's count
//! starts, when Redis has none (the first request of the day, or Redis lost it), from what the
//! other replicas have stored in PostgreSQL plus this replica's own count: only other
//! replicas' last two seconds can be missing from it.
//!
//! The client IP's budget (`unauthenticated`) is a minute policy alone, decided the same way by
//! a second script.
//!
//! When Redis cannot answer (down, or slower than the timeout), each replica falls back to its
//! own in-memory limits, so the service stays up and every replica still enforces the limits
//! on its own (together they may then allow up to one limit per replica), starting from what
//! Redis last answered it (the day's count, and each minute policy's TAT). This is logged and
//! shown by `/health/detailed`. A replica asks Redis every second whether it answers (`watch`),
//! requests or none, so it sees an outage and the recovery within a second or two; a command
//! whose connection Redis dropped is sent once more on a new one (`within_timeout`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::scripts::{MINUTE_SCRIPT, SCRIPT};
use super::Applied;

const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct SharedLimits {
    client: redis::Client,
    script: redis::Script,
    minute_script: redis::Script,
    connection: Mutex<Option<ConnectionManager>>,
    /// While set and in the future, Redis is not asked (it failed recently).
    paused_until: Mutex<Option<Instant>>,
    connecting: AtomicBool,
    healthy: AtomicBool,
    /// This replica's name, as in `rate_limit_daily`.
    replica: String,
    /// How long a command may take before the replica decides on its own
    /// (`rate_limits.redis_timeout_ms`).
    timeout: Duration,
}

/// What the calling replica knows of a subject's day (`RateLimiter::take_known`) and of its
/// minute policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// The count Redis last gave it, plus what it allowed on its own since.
    pub used: u64,
    /// What it allowed on its own that Redis has not counted.
    pub unshared: u64,
    /// How far ahead of now its own TAT for the minute policy lies (microseconds): the minute
    /// budget spent on its own, which Redis's TAT is raised to.
    pub minute_ahead_us: u64,
    /// Every request it counted that day (`unshared` are the last of them).
    pub own: u64,
}

/// The day's count to start from when Redis has none: every replica's stored share (this
/// replica's own count for its own), and their sum, never less than this replica knows of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seed {
    pub total: u64,
    pub shares: Vec<(String, u64)>,
}

/// What Redis answered.
pub enum Decision {
    Decided(SharedVerdict),
    /// Redis has no count for the day (first request of the day, or Redis lost it): ask
    /// again with the count to start from.
    NeedsSeed,
}

/// The two policies as Redis decided them, and the day's count after this request.
pub struct SharedVerdict {
    pub minute: Applied,
    /// How far ahead of now (microseconds) the minute policy's TAT lies after this request,
    /// allowed or not (`stored_ahead`): where `RateLimiter` starts if Redis goes away. `None`
    /// when the script left a TAT kept under another quota as it was (cut to a window of this
    /// one, which it owes more than): this replica's copy stays as it was too.
    pub minute_ahead_us: Option<u64>,
    pub daily_allowed: bool,
    pub used_today: u64,
}

impl SharedLimits {
    pub fn new(url: &str, replica: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
            minute_script: redis::Script::new(MINUTE_SCRIPT),
            connection: Mutex::new(None),
            paused_until: Mutex::new(None),
            connecting: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            replica: replica.to_owned(),
            timeout,
        })
    }

    /// Whether the last call to Redis succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Decides one request; `None` when Redis could not (the caller uses its local limits).
    /// `seed`: the day's count to start from if Redis has none.
    #[allow(clippy::too_many_arguments)]
    pub async fn check(
        &self,
        subject: &str,
        name: &'static str,
        quota: u64,
        daily_quota: u64,
        seed: Option<&Seed>,
        known: Known,
        day: chrono::NaiveDate,
        seconds_to_midnight: u64,
    ) -> Option<Decision> {
        let mut invocation = self.script.key(format!("herald:rl:{subject}:{name}"));
        invocation
            .key(format!("herald:rl:{subject}:daily:{day}"))
            .key(format!("herald:rl:{subject}:daily:{day}:shares"))
            .key(format!("herald:rl:{subject}:{name}:quota"))
            .arg(quota)
            .arg(daily_quota)
            .arg(seed.map_or_else(String::new, |s| s.total.to_string()))
            .arg(seconds_to_midnight + 3600)
            .arg(known.used)
            .arg(known.unshared)
            .arg(known.minute_ahead_us)
            .arg(&self.replica)
            .arg(known.own);
        for (replica, share) in seed.map_or(&[][..], |s| &s.shares[..]) {
            invocation.arg(replica).arg(share);
        }
        match self.run::<Vec<i64>>(&invocation).await? {
            reply if reply == [-1] => Some(Decision::NeedsSeed),
            reply if reply.len() == 6 => Some(Decision::Decided(SharedVerdict {
                minute: minute_policy(name, quota, &reply),
                minute_ahead_us: (reply[5] == 0)
                    .then(|| stored_ahead(&reply, quota, reply[3] == 1)),
                daily_allowed: reply[3] == 1,
                used_today: reply[4].max(0) as u64,
            })),
            _ => self.failed("unexpected reply from the rate-limit script"),
        }
    }

    /// Decides one request against a minute policy alone, and how far ahead the TAT lies after
    /// it when allowed (as `SharedVerdict`); `None` when Redis could not. `ahead_us`: how far
    /// ahead of now this replica's own TAT for it lies (`Known`).
    pub async fn check_minute(
        &self,
        subject: &str,
        name: &'static str,
        quota: u64,
        ahead_us: u64,
    ) -> Option<(Applied, Option<u64>)> {
        let mut invocation = self
            .minute_script
            .key(format!("herald:rl:{subject}:{name}"));
        invocation
            .key(format!("herald:rl:{subject}:{name}:quota"))
            .arg(quota)
            .arg(ahead_us);
        match self.run::<Vec<i64>>(&invocation).await? {
            reply if reply.len() == 4 => {
                let ahead = (reply[3] == 0).then(|| stored_ahead(&reply, quota, reply[0] == 1));
                Some((minute_policy(name, quota, &reply), ahead))
            }
            _ => self.failed("unexpected reply from the rate-limit script"),
        }
    }

    /// Runs a script in Redis within the timeout: its reply, or `None` when Redis could not
    /// answer (it is then not asked again for a second).
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let connection = self.connection()?;
        let answer = within_timeout(self.timeout, || {
            let mut connection = connection.clone();
            async move { invocation.invoke_async(&mut connection).await }
        });
        self.settle(answer.await)
    }

    /// Keeps `healthy` true to Redis while limits are shared, requests or none: connects, then
    /// asks Redis every second (`PING`, paused or not), so `/health/detailed` sees an outage
    /// within about a second, and a replica that had fallen back to its own limits uses Redis
    /// again about a second after it answers, before its next request rather than because of it.
    pub async fn watch(&self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let connection = self.connection.lock().expect("lock").clone();
            match connection {
                None => self.connect().await,
                Some(connection) => {
                    let answer = within_timeout(self.timeout, || {
                        let mut connection = connection.clone();
                        async move { redis::cmd("PING").query_async(&mut connection).await }
                    });
                    if self.settle::<()>(answer.await).is_some() {
                        *self.paused_until.lock().expect("lock") = None;
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// Notes what Redis answered: healthy on a reply, paused for a second on a failure.
    fn settle<T>(&self, answer: Result<T, String>) -> Option<T> {
        match answer {
            Ok(reply) => {
                self.healthy.store(true, Ordering::Relaxed);
                Some(reply)
            }
            Err(why) => self.failed(&why),
        }
    }

    /// Notes that Redis could not answer; `None`.
    fn failed<T>(&self, why: &str) -> Option<T> {
        if self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                why,
                "shared rate limits unavailable; using this replica's own"
            );
        }
        *self.paused_until.lock().expect("lock") = Some(Instant::now() + RETRY_AFTER);
        None
    }

    /// The connection, unless Redis is paused; connects in the background when there is none.
    fn connection(&self) -> Option<ConnectionManager> {
        let paused = self
            .paused_until
            .lock()
            .expect("lock")
            .is_some_and(|until| Instant::now() < until);
        if paused {
            return None;
        }
        if let Some(connection) = self.connection.lock().expect("lock").clone() {
            return Some(connection);
        }
        None
    }

    /// Connects (once at a time); on failure pauses Redis for a second.
    pub async fn connect(&self) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            self.timeout * 4,
            self.client.get_connection_manager_with_config(config),
        )
        .await;
        match made {
            Ok(Ok(connection)) => {
                *self.connection.lock().expect("lock") = Some(connection);
                self.healthy.store(true, Ordering::Relaxed);
            }
            Ok(Err(error)) => {
                self.failed::<()>(&error.to_string());
            }
            Err(_) => {
                self.failed::<()>("connecting to Redis timed out");
            }
        }
        self.connecting.store(false, Ordering::Release);
    }

    /// Whether a connection exists (the manager reconnects by itself once made).
    pub fn connected(&self) -> bool {
        self.connection.lock().expect("lock").is_some()
    }
}

/// The minute policy from a script's first three answers: allowed, remaining, microseconds
/// until reset (or until one more request is allowed).
fn minute_policy(name: &'static str, quota: u64, reply: &[i64]) -> Applied {
    Applied {
        name,
        quota,
        window_seconds: 60,
        allowed: reply[0] == 1,
        remaining: reply[1].max(0) as u64,
        reset_at: std::time::SystemTime::now() + Duration::from_micros(reply[2].max(0) as u64),
    }
}

/// How far ahead of now (µs) a script left the minute policy's TAT, from its answers (the
/// interval and window as the script computes them): the third answer is that once an allowed
/// request is `counted`; one interval less when the minute policy allowed it but the day did
/// not (nothing was spent); and when the minute policy refused, the wait until one more is
/// allowed, which is the TAT ahead less a window plus an interval.
pub(super) fn stored_ahead(reply: &[i64], quota: u64, counted: bool) -> u64 {
    let interval = super::gcra::interval(quota, 60_000_000) as u64;
    let window = interval * quota.max(1);
    let answer = reply[2].max(0) as u64;
    match (reply[0] == 1, counted) {
        (true, true) => answer,
        (true, false) => answer.saturating_sub(interval),
        (false, _) => answer + window - interval,
    }
}

/// `attempt`'s reply within `timeout`, or why there is none. A connection Redis dropped (it
/// restarted, say) fails the command sent on it, and the manager connects again for the next
/// one: the command is sent once more, within the same time, rather than the request being
/// decided without Redis. (A script that ran before its connection dropped then runs twice,
/// counting its request twice: never more allowed than the limit.)
async fn within_timeout<T, F, Fut>(timeout: Duration, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tries = 0;
    loop {
        tries += 1;
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(error)) if tries == 1 && dropped(&error) => continue,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("Redis did not answer in time".into()),
        }
    }
}

/// Whether `error` is a connection that ended or could not be made, not Redis refusing the
/// command.
fn dropped(error: &redis::RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}
