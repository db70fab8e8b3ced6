//! The rate-limit headers of a response: `X-RateLimit-Limit`, `-Remaining` and `-Reset` (epoch
//! seconds) for the most restrictive policy, and the IETF draft fields `RateLimit-Policy` (every
//! policy of the caller, the ones this request did not touch included) and `RateLimit` (the most restrictive one's remaining requests and seconds to reset).

use poem::http::HeaderValue;
use poem::Response;

use super::Applied;

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
        let reset_at = chrono::Utc::now().timestamp() as u64 + binding.reset_seconds;
        let applied = self.applied.iter().map(|a| Policy {
            name: a.name,
            quota: a.quota,
            window_seconds: a.window_seconds,
        });
        let policies: Vec<Policy> = if self.policies.is_empty() {
            applied.collect()
        } else {
            self.policies.clone()
        };
        let policy = policies
            .iter()
            .map(|p| format!("\"{}\";q={};w={}", p.name, p.quota, p.window_seconds))
            .collect::<Vec<_>>()
            .join(", ");
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("x-ratelimit-limit", binding.quota.to_string());
        set("x-ratelimit-remaining", binding.remaining.to_string());
        set("x-ratelimit-reset", reset_at.to_string());
        set("ratelimit-policy", policy);
        set(
            "ratelimit",
            format!(
                "\"{}\";r={};t={}",
                binding.name, binding.remaining, binding.reset_seconds
            ),
        );
    }
}
