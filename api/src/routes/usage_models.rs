//! Bodies of the usage and admin-summary endpoints.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use herald_projections::usage::{JobStats, SecurityStats};
use poem_openapi::Object;
use uuid::Uuid;

/// One caller's requests in one project (or none) and one bucket.
#[derive(Debug, Object)]
pub struct UsageBucket {
    /// Start of the hour or day (UTC).
    pub start: DateTime<Utc>,
    /// `api_key` or `user`; `null` for requests whose credentials were refused.
    #[oai(nullable)]
    pub actor_type: Option<String>,
    #[oai(nullable)]
    pub actor_id: Option<String>,
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
    pub requests: i64,
    /// Requests per resource (`jobs`, `api-keys`, `webhooks`, ...; `other`: paths no route
    /// serves).
    pub by_route_group: BTreeMap<String, i64>,
    /// Requests per status class (`2xx`, `4xx`, ...; `replayed`: answers an
    /// `Idempotency-Key` replayed from its store).
    pub by_status_class: BTreeMap<String, i64>,
    /// Accepted `POST /jobs`, replays excluded.
    pub jobs_submitted: i64,
}

/// A key's daily quota today (UTC).
#[derive(Debug, Object)]
pub struct KeyQuota {
    pub key_id: String,
    pub daily_quota: u64,
    pub used_today: u64,
    pub remaining_today: u64,
}

#[derive(Debug, Object)]
pub struct UsageReport {
    /// The start of the range counted: the asked `from`, down to the start of its bucket.
    pub from: DateTime<Utc>,
    /// The end of the range counted (excluded): the asked `to`, up to the next whole hour.
    pub to: DateTime<Utc>,
    /// `hour` or `day`.
    pub granularity: String,
    pub data: Vec<UsageBucket>,
    /// Whether more entries follow: ask again with `cursor` set to `next_cursor`.
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
    /// The daily quota of every key in `data` (and of `key_id`, when asked).
    pub quotas: Vec<KeyQuota>,
}

#[derive(Debug, Object)]
pub struct HourCount {
    pub hour: DateTime<Utc>,
    pub jobs: i64,
}

#[derive(Debug, Object)]
pub struct AdminStats {
    /// Jobs (not deleted) per status.
    pub jobs_by_status: BTreeMap<String, i64>,
    /// Keys neither revoked nor expired.
    pub active_keys: i64,
    /// Jobs created (and not deleted) in each hour, oldest first: 24 entries, the 23 whole
    /// hours before the current one and the current one so far, hours without jobs included.
    pub jobs_per_hour: Vec<HourCount>,
    /// Mean time from first start to finish of the jobs that succeeded or failed in the last
    /// 24 hours (a retried job's earlier attempts and its waits between them included).
    #[oai(nullable)]
    pub average_processing_seconds: Option<f64>,
    /// Of the jobs that succeeded or failed in the last 24 hours, the share that succeeded
    /// (cancelled jobs did not run to an outcome and are left out); `null` when none did.
    #[oai(nullable)]
    pub success_rate: Option<f64>,
    /// Jobs that reached an end in the last 24 hours: succeeded, failed or cancelled.
    pub finished_last_24h: i64,
    pub succeeded_last_24h: i64,
    pub failed_last_24h: i64,
}

impl From<JobStats> for AdminStats {
    fn from(stats: JobStats) -> Self {
        Self {
            jobs_by_status: stats.by_status.into_iter().collect(),
            active_keys: stats.active_keys,
            jobs_per_hour: stats
                .created_per_hour
                .into_iter()
                .map(|(hour, jobs)| HourCount { hour, jobs })
                .collect(),
            average_processing_seconds: stats.average_processing_seconds,
            success_rate: {
                let ran = stats.succeeded_last_24h + stats.failed_last_24h;
                (ran > 0).then(|| stats.succeeded_last_24h as f64 / ran as f64)
            },
            finished_last_24h: stats.finished_last_24h,
            succeeded_last_24h: stats.succeeded_last_24h,
            failed_last_24h: stats.failed_last_24h,
        }
    }
}

#[derive(Debug, Object)]
pub struct RefusedIp {
    /// The client's network, as per-IP budgets count it: an IPv4 address, or an IPv6 client's
    /// /64 (`2001:db8:1:2::/64`).
    pub ip: String,
    pub refusals: i64,
}

#[derive(Debug, Object)]
pub struct AdminSecurity {
    /// 401 answers in the last 24 hours.
    pub failed_authentications_24h: i64,
    /// 403 answers in the last 24 hours.
    pub forbidden_24h: i64,
    /// 429 answers in the last 24 hours.
    pub rate_limited_24h: i64,
    /// Request-log records in the last 24 hours.
    pub audit_records_24h: i64,
    /// Keys neither revoked nor expired.
    pub active_keys: i64,
    /// The client networks (an IPv6 client's /64 by default) with the most 401, 403 and 429
    /// answers in the last 24 hours.
    pub top_refused_ips: Vec<RefusedIp>,
}

impl From<SecurityStats> for AdminSecurity {
    fn from(stats: SecurityStats) -> Self {
        Self {
            failed_authentications_24h: stats.failed_authentications,
            forbidden_24h: stats.forbidden,
            rate_limited_24h: stats.rate_limited,
            audit_records_24h: stats.requests,
            active_keys: stats.active_keys,
            top_refused_ips: stats
                .top_refused_ips
                .into_iter()
                .map(|(ip, refusals)| RefusedIp { ip, refusals })
                .collect(),
        }
    }
}
