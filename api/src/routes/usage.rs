//! `GET /api/v1/usage` (scope `usage:read`): requests per caller and bucket, by route group and
//! status class, jobs submitted, and each key's daily quota today; and the admin summaries
//! `GET /admin/stats` and `GET /admin/security`. All read projections of the request log and
//! the read models (`herald_projections::usage`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use herald_domain::Scope;
use herald_projections::usage::{self, UsageRow};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::usage_models::*;
use super::ApiTags;
use crate::auth::Credentials;
use crate::http::cursor;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct UsageApi {
    pub state: Arc<AppState>,
}

/// `/api/v1/jobs/{id}` → `jobs`: the resource a route belongs to.
fn route_group(route: &str) -> String {
    route
        .strip_prefix("/api/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("other")
        .to_owned()
}

/// Folds the rows of one bucket, caller and project into one entry (the rows come ordered by
/// all three, so each entry's rows are adjacent).
fn buckets(rows: Vec<UsageRow>) -> Vec<UsageBucket> {
    let mut out: Vec<UsageBucket> = Vec::new();
    for row in rows {
        let same = out.last().is_some_and(|b| {
            b.start == row.bucket
                && b.actor_id == row.actor_id
                && b.actor_type == row.actor_type
                && b.project_id == row.project_id
        });
        if !same {
            out.push(UsageBucket {
                start: row.bucket,
                actor_type: row.actor_type.clone(),
                actor_id: row.actor_id.clone(),
                project_id: row.project_id,
                requests: 0,
                by_route_group: BTreeMap::new(),
                by_status_class: BTreeMap::new(),
                jobs_submitted: 0,
            });
        }
        let bucket = out.last_mut().expect("pushed above");
        bucket.requests += row.requests;
        *bucket
            .by_route_group
            .entry(route_group(&row.route))
            .or_default() += row.requests;
        *bucket
            .by_status_class
            .entry(row.status_class.clone())
            .or_default() += row.requests;
        if row.route == "/api/v1/jobs" && row.method == "POST" && row.status_class == "2xx" {
            bucket.jobs_submitted += row.requests;
        }
    }
    out
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Audit")]
impl UsageApi {
    /// Usage per caller
    ///
    /// Requests in `[from, to)` (default: the last 24 hours) per caller and `hour` or `day`
    /// bucket (UTC), by route group and status class, with jobs submitted; plus each key's
    /// daily quota used and remaining today. The range counted is `from` down to the start of
    /// its bucket and `to` up to the next whole hour; the report's `from` and `to` are that
    /// range. Counted from the request log, so the totals equal `GET /audit/requests` for the
    /// report's range while the log holds it (retention keeps the counts of the records it
    /// prunes). Filter `key_id` (or a user id, any UUID form; anything else is refused).
    /// Ordered by bucket, then caller, then
    /// project; `limit` entries a page (1–1000, 1000 by default), the next page with
    /// `cursor=<next_cursor>`, which keeps the report's range and granularity (a page asked
    /// with others is refused). Scope `usage:read`; a project key sees its project's usage.
    #[oai(path = "/usage", method = "get", operation_id = "getUsage")]
    #[allow(clippy::too_many_arguments)]
    async fn usage(
        &self,
        auth: Credentials,
        from: Query<Option<DateTime<Utc>>>,
        to: Query<Option<DateTime<Utc>>>,
        granularity: Query<Option<String>>,
        key_id: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<UsageReport>> {
        let caller = self.state.authorize(&auth, Scope::UsageRead).await?;
        let key_id = key_id.0.as_deref().map(caller_id).transpose()?;
        let resume: Option<Resume> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        // A page left without a range keeps the one its report counted, so a report of the
        // last 24 hours stays on the same hours however long it takes to page through.
        let report = resume.as_ref().and_then(Resume::report);
        super::audit_filters::within_years("to", to.0)?;
        let to = to.0.or(report.map(|r| r.1)).unwrap_or_else(Utc::now);
        // The default range is the 24 hours before `to`, or as many of them as there are after
        // the earliest time a range may start.
        let defaulted = from.0.is_none() && report.is_none();
        let from = from.0.or(report.map(|r| r.0)).unwrap_or_else(|| {
            let earliest = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single();
            let earliest = earliest.expect("the first of the years a range may name");
            (to - Duration::hours(24)).max(earliest)
        });
        super::audit_filters::within_years("from", Some(from))?;
        super::audit_filters::within_years("to", Some(to))?;
        let granularity = (granularity.0)
            .or(report.map(|r| r.2.to_owned()))
            .unwrap_or_else(|| "hour".into());
        let longest = match granularity.as_str() {
            "hour" => Duration::days(31),
            "day" => Duration::days(366),
            _ => return Err(ApiError::field("granularity", "must be `hour` or `day`").into()),
        };
        // A cursor's range is the one its report counted, rounded out: up to two hours longer
        // than asked by hour, a day and an hour by day.
        let slack = match (report.is_some(), granularity.as_str()) {
            (false, _) => Duration::zero(),
            (true, "day") => Duration::hours(25),
            (true, _) => Duration::hours(2),
        };
        if defaulted && from >= to {
            // Only a `to` at the very first instant leaves the default range empty.
            return Err(ApiError::field("to", "must be after 0001-01-01T00:00:00Z").into());
        }
        if from >= to || to - from > longest + slack {
            return Err(ApiError::field(
                "from",
                "must be before `to`, at most 31 days before it by hour or 366 by day",
            )
            .into());
        }
        // A report is read whole more often than paged, so its page is larger than a list's.
        let entries = cursor::limit_within(limit.0, 1000, 1000)?;
        let (from, to) = counted_range(from, to, &granularity);
        let elsewhere = report.is_some_and(|counted| counted != (from, to, granularity.as_str()));
        let after = resume.as_ref().map(|r| r.after().clone());
        if elsewhere
            || after
                .as_ref()
                .is_some_and(|a| !is_bucket(a.0, from, to, &granularity))
        {
            let message = "was returned for another range or granularity: page with the same ones";
            return Err(ApiError::field("cursor", message).into());
        }
        let query = usage::UsageQuery {
            from,
            to,
            granularity: &granularity,
            actor_id: key_id.as_deref(),
            projects: caller.visible_projects(),
            after,
            entries: entries + 1,
        };
        let mut data = buckets(usage::usage(&self.state.pool, &query).await?);
        let has_more = cursor::page(&mut data, entries);
        let next_cursor = has_more
            .then(|| {
                data.last().map(|b| {
                    cursor::encode(&Resume::Ranged {
                        after: entry_key(b),
                        from,
                        to,
                        granularity: granularity.clone(),
                    })
                })
            })
            .flatten();
        let mut keys: Vec<String> = data
            .iter()
            .filter(|b| b.actor_type.as_deref() == Some("api_key"))
            .filter_map(|b| b.actor_id.clone())
            .collect();
        keys.extend(key_id.clone());
        keys.sort();
        keys.dedup();
        let mut quotas = Vec::new();
        for id in keys {
            if let Some(quota) = self.quota(&caller, &id).await? {
                quotas.push(quota);
            }
        }
        Ok(Json(UsageReport {
            from,
            to,
            granularity,
            data,
            has_more,
            next_cursor,
            quotas,
        }))
    }

    /// Job and key figures
    ///
    /// Jobs by status, active keys, jobs created per hour over the last 24 hours, and the
    /// average processing time and success rate of jobs finished in that time. Scope `admin`.
    #[oai(path = "/admin/stats", method = "get", operation_id = "getAdminStats")]
    async fn stats(&self, auth: Credentials) -> ApiResult<Json<AdminStats>> {
        self.state.authorize(&auth, Scope::Admin).await?;
        let stats = usage::job_stats(&self.state.pool).await?;
        Ok(Json(AdminStats::from(stats)))
    }

    /// Security figures
    ///
    /// Over the last 24 hours of the request log: failed authentications (401), refusals (403),
    /// rate-limit refusals (429), all recorded requests and the client IPs refused most; plus
    /// the active keys. Scope `admin`.
    #[oai(
        path = "/admin/security",
        method = "get",
        operation_id = "getAdminSecurity"
    )]
    async fn security(&self, auth: Credentials) -> ApiResult<Json<AdminSecurity>> {
        self.state.authorize(&auth, Scope::Admin).await?;
        let prefix = self.state.config.rate_limits.ipv6_prefix;
        let stats = usage::security_stats(&self.state.pool, prefix).await?;
        Ok(Json(AdminSecurity::from(stats)))
    }
}

impl UsageApi {
    /// A key's daily quota today, if the caller may see the key.
    async fn quota(
        &self,
        caller: &crate::auth::Caller,
        id: &str,
    ) -> Result<Option<KeyQuota>, ApiError> {
        let Some(key_id) = herald_domain::KeyId::parse(id) else {
            return Ok(None);
        };
        let (key, _) = self
            .state
            .keys
            .load(&key_id.to_string())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let Some(key) = key.state() else {
            return Ok(None);
        };
        let visible = match key.project_id {
            Some(project) => caller.can_see(project),
            None => caller.visible_projects().is_none(),
        };
        if !visible {
            return Ok(None);
        }
        let limit = key
            .rate_limit
            .daily_quota
            .unwrap_or(self.state.config.rate_limits.daily_quota);
        let used = self
            .state
            .rate_limiter
            .used_today(
                &self.state.pool,
                &format!("key:{}", key.budget_key(&key_id)),
            )
            .await;
        Ok(Some(KeyQuota {
            key_id: id.to_owned(),
            daily_quota: u64::from(limit),
            used_today: used,
            remaining_today: u64::from(limit).saturating_sub(used),
        }))
    }
}

/// Whether `start` can begin a bucket of a report over `from`..`to` by `granularity`: a cursor
/// from another report would otherwise skip this one's buckets and read as an empty page.
fn is_bucket(
    start: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: &str,
) -> bool {
    use chrono::Timelike;
    let whole_hour = start.minute() == 0 && start.second() == 0 && start.nanosecond() == 0;
    let aligned = whole_hour && (granularity == "hour" || start.hour() == 0);
    aligned && from <= start && start < to
}

/// Where a report's next page starts: after an entry, in the range and granularity the report
/// counted, which a page asked without a range keeps and a page asked with another refuses.
/// (A cursor made before the range was kept in it holds the entry alone.)
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Resume {
    Ranged {
        after: usage::EntryKey,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        granularity: String,
    },
    Entry(usage::EntryKey),
}

impl Resume {
    fn after(&self) -> &usage::EntryKey {
        match self {
            Resume::Ranged { after, .. } | Resume::Entry(after) => after,
        }
    }

    fn report(&self) -> Option<(DateTime<Utc>, DateTime<Utc>, &str)> {
        match self {
            Resume::Ranged {
                from,
                to,
                granularity,
                ..
            } => Some((*from, *to, granularity)),
            Resume::Entry(_) => None,
        }
    }
}

/// Where the page after `bucket` starts, as `usage::usage` orders entries.
fn entry_key(bucket: &UsageBucket) -> usage::EntryKey {
    (
        bucket.start,
        bucket.actor_id.clone().unwrap_or_default(),
        bucket.actor_type.clone().unwrap_or_default(),
        bucket.project_id.unwrap_or_default(),
    )
}

/// The range usage is counted over: `from` down to the start of its bucket and `to` up to the
/// next whole hour (the counts are hourly), so the report says exactly which records it holds.
fn counted_range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: &str,
) -> (DateTime<Utc>, DateTime<Utc>) {
    // By calendar fields, not `duration_trunc`, which fails for times past 2262 (nanoseconds
    // since 1970 overflow).
    let to_hour = |at: DateTime<Utc>| {
        at.with_nanosecond(0)
            .and_then(|at| at.with_second(0))
            .and_then(|at| at.with_minute(0))
            .expect("zero is a valid minute, second and nanosecond")
    };
    let from = match granularity {
        "day" => to_hour(from).with_hour(0).expect("zero is a valid hour"),
        _ => to_hour(from),
    };
    // Not past the last year RFC 3339 writes (the end of 9999 is counted as asked).
    let to = match to_hour(to) {
        whole if whole == to => to,
        whole => Some(whole + Duration::hours(1))
            .filter(|up| up.year() <= 9999)
            .unwrap_or(to),
    };
    (from, to)
}

/// The caller a usage report is filtered to, as the records hold it: a key id, or a user id
/// (any UUID form, hyphenated in lower case). An id that could name no caller is refused, not
/// answered with an empty report.
fn caller_id(id: &str) -> Result<String, ApiError> {
    if herald_domain::KeyId::parse(id).is_some() {
        return Ok(id.to_owned());
    }
    match uuid::Uuid::parse_str(id) {
        Ok(user) => Ok(user.to_string()),
        Err(_) => Err(ApiError::field(
            "key_id",
            "must be a key id (16 letters and digits) or a user id (a UUID)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_counted_range_is_rounded_out_to_whole_buckets_at_any_date() {
        for (from, to, granularity, counted) in [
            (
                "2026-12-06T10:30:00Z",
                "2026-12-06T12:00:00Z",
                "hour",
                ("2026-12-06T10:00:00Z", "2026-12-06T12:00:00Z"),
            ),
            (
                "2026-12-06T10:30:00Z",
                "2026-12-07T12:00:01Z",
                "day",
                ("2026-12-06T00:00:00Z", "2026-12-07T13:00:00Z"),
            ),
            // Past 2262, where nanoseconds since 1970 no longer fit an i64.
            (
                "2300-01-01T10:30:00Z",
                "2300-01-02T10:30:00Z",
                "day",
                ("2300-01-01T00:00:00Z", "2300-01-02T11:00:00Z"),
            ),
        ] {
            let range = counted_range(at(from), at(to), granularity);
            assert_eq!(range, (at(counted.0), at(counted.1)), "{from} {to}");
        }
    }
}
