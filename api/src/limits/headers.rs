//! The rate-limit headers of a response: `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch
//! seconds) for the most restrictive policy, and the IETF draft fields `RateLimit-Policy` (every
//! policy of the caller, the ones this request did not touch included) and `RateLimit` (the
//! most restrictive one's remaining requests and seconds to reset). The reset is the time each
//! policy fixed when it was checked: a handler that ran for a while does not push it later.

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use poem::http::{HeaderName, HeaderValue};
use poem::Response;

use super::{whole_seconds, Applied};

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
            .min_by_key(|a| (a.allowed, a.remaining, std::cmp::Reverse(a.reset_at)))
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
        // Both rounded up, so a client that waits until then is not refused again.
        let since_epoch = binding.reset_at.duration_since(UNIX_EPOCH);
        let reset_at = whole_seconds(since_epoch.unwrap_or_default());
        let reset_in = binding.reset_seconds();
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// The headers of a response to a request whose `read` policy resets at `reset_at`.
    fn headers(reset_at: SystemTime, allowed: bool) -> Response {
        let rate = RateHeaders {
            applied: vec![Applied {
                name: "read",
                quota: 1,
                window_seconds: 60,
                allowed,
                remaining: 0,
                reset_at,
            }],
            policies: Vec::new(),
        };
        let mut response = Response::default();
        rate.apply(&mut response);
        response
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    /// One more request allowed at …268.454 s: the reset is announced for …269, the first
    /// whole second after it, never for …268, when the request would still be refused; a
    /// reset on a whole second (a day's, at midnight) is announced for that second.
    #[test]
    fn the_reset_is_the_first_whole_second_at_which_the_request_is_allowed() {
        let at = |millis| UNIX_EPOCH + Duration::from_millis(millis);
        let refused = headers(at(1_796_535_268_454), false);
        assert_eq!(header(&refused, "x-ratelimit-reset"), "1796535269");
        let midnight = headers(at(1_796_601_600_000), false);
        assert_eq!(header(&midnight, "x-ratelimit-reset"), "1796601600");
    }

    /// `RateLimit`'s `t` counts from the response: the seconds left, rounded up.
    #[test]
    fn the_seconds_left_are_rounded_up() {
        let response = headers(SystemTime::now() + Duration::from_millis(59_900), false);
        assert_eq!(header(&response, "ratelimit"), "\"read\";r=0;t=60");
    }
}
