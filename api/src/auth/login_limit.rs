//! The login limiter: at most N attempts per window per client IP and per email, counted
//! exactly (a sliding log of attempt times, not a fixed window that lets a burst through at
//! the boundary). In memory per replica, idle entries swept as the map grows; with `REDIS_URL`
//! the log is kept in Redis (one sorted set per subject, checked and added to by one script),
//! so all replicas together allow N attempts. When Redis cannot answer, each replica falls back
//! to its own log, as the rate limits do.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::limits::shared::SharedLimits;
use crate::limits::Applied;

/// KEYS: one sorted set of attempt times (µs, Redis's clock) per subject. ARGV: attempts
/// allowed, window in µs. Drops attempts older than the window; if every subject has room,
/// adds this attempt to each and returns 0, else returns the µs until the fullest has room.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wait = 0
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    wait = math.max(wait, oldest + window - now, 1)
  end
end
if wait > 0 then
  return wait
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, now .. ':' .. redis.call('ZCARD', key))
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
end
return 0
"#;

/// Attempt times per subject, swept of idle subjects once it holds more than `sweep_above`,
/// or more than `FIRST_SWEEP` a window after the last sweep.
struct Log {
    times: HashMap<String, VecDeque<Instant>>,
    sweep_above: usize,
    swept_at: Option<Instant>,
}

/// Subjects held before the first sweep.
const FIRST_SWEEP: usize = 10_000;

pub struct LoginLimiter {
    attempts: usize,
    window: Duration,
    log: Mutex<Log>,
    shared: Option<(Arc<SharedLimits>, redis::Script)>,
}

impl LoginLimiter {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts: attempts as usize,
            window,
            log: Mutex::new(Log {
                times: HashMap::new(),
                sweep_above: FIRST_SWEEP,
                swept_at: None,
            }),
            shared: None,
        }
    }

    /// Keeps the log in Redis, through the rate limits' connection (`None`: in memory).
    pub fn shared_through(mut self, shared: Option<Arc<SharedLimits>>) -> Self {
        self.shared = shared.map(|shared| (shared, redis::Script::new(SCRIPT)));
        self
    }

    /// Records one attempt for every subject (e.g. `ip:…` and `email:…`) if all of them have
    /// room; otherwise records nothing and answers how long until the fullest one has room.
    pub async fn attempt(&self, subjects: &[String]) -> Result<(), Duration> {
        if let Some((shared, script)) = self.shared.as_ref().filter(|(s, _)| s.connected()) {
            let mut invocation = script.prepare_invoke();
            for subject in subjects {
                invocation.key(format!("herald:login:{subject}"));
            }
            invocation
                .arg(self.attempts)
                .arg(self.window.as_micros() as u64);
            if let Some(wait) = shared.run::<i64>(&invocation).await {
                return match wait {
                    0 => Ok(()),
                    wait => Err(Duration::from_micros(wait.max(1) as u64)),
                };
            }
        }
        self.attempt_at(subjects, Instant::now())
    }

    /// The login policy as it refused an attempt that must wait `wait`: what the rate-limit
    /// headers of the 429 say (`login`, the attempts per window, none left until then).
    pub fn refused(&self, wait: Duration) -> Applied {
        Applied {
            name: "login",
            quota: self.attempts as u64,
            window_seconds: self.window.as_secs(),
            allowed: false,
            remaining: 0,
            reset_at: SystemTime::now() + wait,
        }
    }

    /// `attempt` in this replica's memory, at `now`.
    pub fn attempt_at(&self, subjects: &[String], now: Instant) -> Result<(), Duration> {
        let mut guard = self.log.lock().expect("login limiter lock");
        let Log {
            times: log,
            sweep_above,
            swept_at,
        } = &mut *guard;
        let a_window_since =
            swept_at.is_none_or(|at| now.saturating_duration_since(at) >= self.window);
        if log.len() > *sweep_above || (log.len() > FIRST_SWEEP && a_window_since) {
            log.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
            // The next sweep waits for the map to double, or a window to pass: with many
            // subjects still in their window, each attempt would otherwise walk them all under
            // the lock, and once they are idle a window later they go.
            *sweep_above = FIRST_SWEEP.max(2 * log.len());
            *swept_at = Some(now);
        }
        let mut wait = Duration::ZERO;
        for subject in subjects {
            if let Some(times) = log.get_mut(subject) {
                while times.front().is_some_and(|t| now - *t >= self.window) {
                    times.pop_front();
                }
                if times.len() >= self.attempts {
                    let oldest = *times.front().expect("full log is not empty");
                    wait = wait.max(self.window - (now - oldest));
                }
            }
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for subject in subjects {
            log.entry(subject.clone()).or_default().push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eleventh_attempt_in_the_window_waits_for_the_first_to_age_out() {
        let limiter = LoginLimiter::new(10, Duration::from_secs(900));
        let start = Instant::now();
        let subjects = ["ip:10.0.0.1".to_owned(), "email:a@example.com".to_owned()];
        for i in 0..10 {
            limiter
                .attempt_at(&subjects, start + Duration::from_secs(i))
                .unwrap();
        }
        let wait = limiter
            .attempt_at(&subjects, start + Duration::from_secs(100))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(800));
        assert!(limiter
            .attempt_at(&subjects, start + Duration::from_secs(900))
            .is_ok());
    }

    #[test]
    fn each_subject_is_counted_on_its_own() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let email = "email:a@example.com".to_owned();
        limiter
            .attempt_at(&["ip:1".into(), email.clone()], now)
            .unwrap();
        limiter
            .attempt_at(&["ip:2".into(), email.clone()], now)
            .unwrap();
        assert!(limiter.attempt_at(&["ip:3".into(), email], now).is_err());
        assert!(limiter.attempt_at(&["ip:3".into()], now).is_ok());
    }

    #[test]
    fn idle_subjects_are_swept_and_live_ones_put_off_the_next_sweep() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        let held = |limiter: &LoginLimiter| {
            let log = limiter.log.lock().unwrap();
            (log.times.len(), log.sweep_above)
        };
        for i in 0..=FIRST_SWEEP {
            limiter.attempt_at(&[format!("ip:{i}")], start).unwrap();
        }
        // Past the threshold with every subject live: the sweep keeps them all, and the next
        // waits until the map has doubled instead of walking it at every attempt.
        limiter.attempt_at(&["ip:new".into()], start).unwrap();
        assert_eq!(held(&limiter), (FIRST_SWEEP + 2, 2 * (FIRST_SWEEP + 1)));
        for i in 0..=FIRST_SWEEP {
            limiter
                .attempt_at(&[format!("ip:more:{i}")], start)
                .unwrap();
        }
        // Once they are idle, the sweep at the doubled size forgets them.
        let later = start + Duration::from_secs(61);
        limiter.attempt_at(&["ip:late".into()], later).unwrap();
        assert_eq!(held(&limiter), (1, FIRST_SWEEP));
    }

    #[test]
    fn idle_subjects_go_a_window_after_the_last_sweep_short_of_the_doubled_size() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..=FIRST_SWEEP + 1 {
            limiter.attempt_at(&[format!("ip:{i}")], start).unwrap();
        }
        // Swept at start (all live), so the next sweep by size waits for twice as many; but a
        // window later, with none of them live, the next attempt sweeps them all the same.
        let later = start + Duration::from_secs(60);
        limiter.attempt_at(&["ip:late".into()], later).unwrap();
        let log = limiter.log.lock().unwrap();
        assert_eq!(log.times.len(), 1);
    }
}
