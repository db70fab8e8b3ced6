//! The rate-limit headers of a response: `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch
//! seconds) for the most restrictive policy, and the IETF draft fields `RateLimit-Policy` (every
//! policy of the caller, the ones this request did not touch included) and `RateLimit` (the
//! most restrictive one's remaining requests and seconds to reset). Times count from when the
//! limits were decided, not from when the response is written: a handler that ran for a while
//! does not push the reset later.

use std::fmt::Write;

use poem::http::{HeaderName, HeaderValue};
use poem::Response;

use super::Applied;

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, Clone, Default)]
pub struct RateHeaders {
    /// The policies this request was checked against.
    pub applied: Vec<Applied>,
    /// Every policy of the caller, for `RateLimit-Policy` (when empty: the applied ones).
    pub policies: Vec<Policy>,
    /// When the policies were decided (`None`: as the response is written).
    pub decided_at: Option<std::time::SystemTime>,
}

/// A policy as `RateLimit-Policy` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub quota: u64,
    pub window_seconds: u64,
}

impl RateHeaders {
    /// The policy that binds: a refusing one first, then the one with the fewest requests left.
    pub fn binding(&self) -> Option<&Applied> {
        self.applied
            .iter()
            .min_by_key(|a| (a.allowed, a.remaining, std::cmp::Reverse(a.reset_seconds)))
    }

    /// Names of the policies that refused the request.
    pub fn violated(&self) -> Vec<String> {
        self.applied
            .iter()
            .filter(|a| !a.allowed)
            .map(|a| a.name.to_owned())
            .collect()
    }

    pub fn apply(&self, response: &mut Response) {
        let Some(binding) = self.binding() else {
            return;
        };
        let now = std::time::SystemTime::now();
        let decided = self.decided_at.unwrap_or(now);
        let epoch = |at: std::time::SystemTime| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
        };
        let reset_at = epoch(decided) + binding.reset_seconds;
        // Seconds left from now, never below 0.
        let reset_in = reset_at.saturating_sub(epoch(now));
        let headers = response.headers_mut();
        // One buffer for every value (each value copies what it needs): this runs on every
        // authenticated response.
        let mut text = String::with_capacity(96);
        let mut set = |name: &HeaderName, text: &mut String| {
            if let Ok(value) = HeaderValue::from_str(text) {
                headers.insert(name.clone(), value);
            }
            text.clear();
        };
        let _ = write!(text, "{}", binding.quota);
        set(&X_RATELIMIT_LIMIT, &mut text);
        let _ = write!(text, "{}", binding.remaining);
        set(&X_RATELIMIT_REMAINING, &mut text);
        let _ = write!(text, "{reset_at}");
        set(&X_RATELIMIT_RESET, &mut text);
        let mut list = |p: Policy| {
            let separator = if text.is_empty() { "" } else { ", " };
            let _ = write!(
                text,
                "{separator}\"{}\";q={};w={}",
                p.name, p.quota, p.window_seconds
            );
        };
        if self.policies.is_empty() {
            self.applied.iter().for_each(|a| {
                list(Policy {
                    name: a.name,
                    quota: a.quota,
                    window_seconds: a.window_seconds,
                })
            });
        } else {
            self.policies.iter().copied().for_each(list);
        }
        set(&RATELIMIT_POLICY, &mut text);
        let _ = write!(
            text,
            "\"{}\";r={};t={}",
            binding.name, binding.remaining, reset_in
        );
        set(&RATELIMIT, &mut text);
    }
}
