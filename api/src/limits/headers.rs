//! The rate-limit headers of a response: `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch
//! seconds) for the most restrictive policy, and the IETF draft fields `RateLimit-Policy` (every
//! policy of the caller, the ones this request did not touch included) and `RateLimit` (the
//! most restrictive one's remaining requests and seconds to reset). Times count from when the
//! limits were decided, not from when the response is written: a handler that ran for a while
//! does not push the reset later.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    pub decided_at: Option<SystemTime>,
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
            .min_by_key(|a| (a.allowed, a.remaining, std::cmp::Reverse(a.reset_in)))
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
        let now = SystemTime::now();
        let reset = self.decided_at.unwrap_or(now) + binding.reset_in;
        // Both rounded up, so a client that waits until then is not refused again.
        let reset_at = whole_seconds(reset.duration_since(UNIX_EPOCH).unwrap_or_default());
        let reset_in = whole_seconds(reset.duration_since(now).unwrap_or_default());
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

/// `duration` in whole seconds, rounded up.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of a response to a request whose `read` policy was decided at `decided`.
    fn headers(decided: SystemTime, reset_in: Duration, allowed: bool) -> Response {
        let rate = RateHeaders {
            applied: vec![Applied {
                name: "read",
                quota: 1,
                window_seconds: 60,
                allowed,
                remaining: 0,
                reset_in,
            }],
            policies: Vec::new(),
            decided_at: Some(decided),
        };
        let mut response = Response::default();
        rate.apply(&mut response);
        response
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    /// Decided at …208.954 s, with one more request allowed 59.5 s later (…268.454 s): the reset
    /// is announced for …269, the first whole second after it, never for …268, when the request
    /// would still be refused.
    #[test]
    fn the_reset_is_the_first_whole_second_at_which_the_request_is_allowed() {
        let decided = UNIX_EPOCH + Duration::from_millis(1_796_535_208_954);
        let refused = headers(decided, Duration::from_millis(59_500), false);
        assert_eq!(header(&refused, "x-ratelimit-reset"), "1796535269");
        let allowed = headers(decided, Duration::from_secs(60), true);
        assert_eq!(header(&allowed, "x-ratelimit-reset"), "1796535269");
        // On a whole second, that second.
        let whole = UNIX_EPOCH + Duration::from_secs(1_796_535_208);
        let on_time = headers(whole, Duration::from_secs(60), false);
        assert_eq!(header(&on_time, "x-ratelimit-reset"), "1796535268");
    }

    /// `RateLimit`'s `t` counts from the response: the seconds left, rounded up.
    #[test]
    fn the_seconds_left_are_rounded_up() {
        let now = SystemTime::now();
        let response = headers(now, Duration::from_millis(59_500), false);
        let field = header(&response, "ratelimit");
        assert!(
            field == "\"read\";r=0;t=60" || field == "\"read\";r=0;t=59",
            "{field}"
        );
    }
}
