//! The login limiter: at most N attempts per window per client IP and per email, counted
//! exactly (a sliding log of attempt times, not a fixed window that lets a burst through at
//! the boundary). In memory, per replica; idle entries are swept as the map grows.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginLimiter {
    attempts: usize,
    window: Duration,
    log: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(attempts: u32, window: Duration) -> Self {
        Self {
            attempts: attempts as usize,
            window,
            log: Mutex::new(HashMap::new()),
        }
    }

    /// Records one attempt for every subject (e.g. `ip:…` and `email:…`) if all of them have
    /// room; otherwise records nothing and answers how long until the fullest one has room.
    pub fn attempt(&self, subjects: &[String], now: Instant) -> Result<(), Duration> {
        let mut log = self.log.lock().expect("login limiter lock");
        if log.len() > 10_000 {
            log.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
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
                .attempt(&subjects, start + Duration::from_secs(i))
                .unwrap();
        }
        let wait = limiter
            .attempt(&subjects, start + Duration::from_secs(100))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(800));
        assert!(limiter
            .attempt(&subjects, start + Duration::from_secs(900))
            .is_ok());
    }

    #[test]
    fn each_subject_is_counted_on_its_own() {
        let limiter = LoginLimiter::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let email = "email:a@example.com".to_owned();
        limiter
            .attempt(&["ip:1".into(), email.clone()], now)
            .unwrap();
        limiter
            .attempt(&["ip:2".into(), email.clone()], now)
            .unwrap();
        assert!(limiter.attempt(&["ip:3".into(), email], now).is_err());
        assert!(limiter.attempt(&["ip:3".into()], now).is_ok());
    }
}
