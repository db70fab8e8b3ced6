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
//! on its own (together they may then allow up to one limit per replica); it retries Redis
//! after a second. This is logged and shown by `/health/detailed`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Applied;

/// The Lua both scripts start their minute policy with: Redis's clock in microseconds (`now`),
/// the policy's emission interval and window from the quota per minute in `ARGV[1]`, and the
/// subject's stored theoretical arrival time (`tat`) from `KEYS[1]`. A macro, not a `const`, so
/// that `concat!` can join it into each script at compile time.
macro_rules! gcra_preamble {
    () => {
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local quota = math.max(tonumber(ARGV[1]), 1)
local interval = math.max(math.floor(60000000 / quota), 1)
local window = interval * quota
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
"#
    };
}

/// KEYS: the subject's TAT for the policy, its daily counter. ARGV: quota per minute, daily
/// quota, the day's count to start from when Redis has none ('' when the caller has not read
/// it: the script then answers `{-1}` and decides nothing), the counter's time to live, and
/// the count the calling replica knows of (what Redis last told it plus what it allowed on its
/// own while Redis was unreachable): the count never stays below it, so requests allowed
/// during an outage are not forgotten when Redis answers again.
/// Returns: minute allowed, remaining, microseconds until reset (or retry), daily allowed,
/// used today. Times are whole microseconds, so the interval is rounded down and the burst
/// tolerance is exactly `quota` intervals (a quota above 60 million a minute is held to one
/// request per microsecond after its burst). A TAT is kept a second longer than it lies ahead
/// (after that it is in the past, which a missing one means too), however long the window.
const SCRIPT: &str = concat!(
    r#"
local stored = redis.call('GET', KEYS[2])
if not stored and ARGV[3] == '' then
  return {-1}
end
"#,
    gcra_preamble!(),
    r#"
local used = math.max(tonumber(stored or ARGV[3]), tonumber(ARGV[5]))
if not stored or used > tonumber(stored) then
  -- Keep the start even if this request is refused, so the next one needs no seed.
  redis.call('SET', KEYS[2], used, 'EX', tonumber(ARGV[4]))
end
local daily_ok = used < tonumber(ARGV[2])
local new_tat = math.max(tat, now) + interval
local minute_ok = new_tat - now <= window
local remaining = 0
local pending = new_tat - now - window
if minute_ok then
  remaining = math.floor((window - (new_tat - now)) / interval)
  pending = new_tat - now
end
if minute_ok and daily_ok then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
  used = used + 1
  redis.call('SET', KEYS[2], used, 'EX', tonumber(ARGV[4]))
end
return {minute_ok and 1 or 0, remaining, math.floor(pending), daily_ok and 1 or 0, used}
"#
);

/// KEYS: the subject's TAT for the policy. ARGV: quota per minute. Returns: allowed, remaining,
/// microseconds until reset (or retry). `SCRIPT`'s minute policy alone, for a budget with no
/// daily quota (the client IP's).
const MINUTE_SCRIPT: &str = concat!(
    gcra_preamble!(),
    r#"
local new_tat = math.max(tat, now) + interval
if new_tat - now <= window then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
  return {1, math.floor((window - (new_tat - now)) / interval), new_tat - now}
end
return {0, 0, new_tat - now - window}
"#
);

const TIMEOUT: Duration = Duration::from_millis(250);
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
    pub daily_allowed: bool,
    pub used_today: u64,
}

impl SharedLimits {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            script: redis::Script::new(SCRIPT),
            minute_script: redis::Script::new(MINUTE_SCRIPT),
            connection: Mutex::new(None),
            paused_until: Mutex::new(None),
            connecting: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
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
        seed: Option<u64>,
        known: u64,
        day: chrono::NaiveDate,
        seconds_to_midnight: u64,
    ) -> Option<Decision> {
        let mut invocation = self.script.key(format!("herald:rl:{subject}:{name}"));
        invocation
            .key(format!("herald:rl:{subject}:daily:{day}"))
            .arg(quota)
            .arg(daily_quota)
            .arg(seed.map_or_else(String::new, |n| n.to_string()))
            .arg(seconds_to_midnight + 3600)
            .arg(known);
        match self.run::<Vec<i64>>(&invocation).await? {
            reply if reply == [-1] => Some(Decision::NeedsSeed),
            reply if reply.len() == 5 => Some(Decision::Decided(SharedVerdict {
                minute: minute_policy(name, quota, &reply),
                daily_allowed: reply[3] == 1,
                used_today: reply[4].max(0) as u64,
            })),
            _ => self.failed("unexpected reply from the rate-limit script"),
        }
    }

    /// Decides one request against a minute policy alone; `None` when Redis could not.
    pub async fn check_minute(
        &self,
        subject: &str,
        name: &'static str,
        quota: u64,
    ) -> Option<Applied> {
        let mut invocation = self
            .minute_script
            .key(format!("herald:rl:{subject}:{name}"));
        invocation.arg(quota);
        match self.run::<Vec<i64>>(&invocation).await? {
            reply if reply.len() == 3 => Some(minute_policy(name, quota, &reply)),
            _ => self.failed("unexpected reply from the rate-limit script"),
        }
    }

    /// Runs a script in Redis within `TIMEOUT`: its reply, or `None` when Redis could not
    /// answer (it is then not asked again for a second).
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let mut connection = self.connection()?;
        match tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(reply)) => {
                self.healthy.store(true, Ordering::Relaxed);
                Some(reply)
            }
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("Redis did not answer in time"),
        }
    }

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
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_number_of_retries(1);
        let made = tokio::time::timeout(
            TIMEOUT * 4,
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
