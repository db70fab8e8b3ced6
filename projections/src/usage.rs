//! Usage and operations figures read from the request log's projections: the hourly usage
//! counts (`usage_hourly`, kept from the log by a background task, plus the records it has not
//! counted yet, so a read is exactly the log's counts), and the summaries behind
//! `GET /admin/stats` and `GET /admin/security`.

use chrono::{DateTime, Utc};
use herald_domain::client_network::client_network_of;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Requests of one caller, project, route, method and status class in one bucket.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub bucket: DateTime<Utc>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub project_id: Option<Uuid>,
    pub route: String,
    pub method: String,
    pub status_class: String,
    pub requests: i64,
}

/// Where a page of usage entries starts: after this entry (bucket, actor id, actor type,
/// project; absent ones as `""` and the nil UUID, the order entries come in).
pub type EntryKey = (DateTime<Utc>, String, String, Uuid);

/// Which usage to read: `[from, to)` by `hour` or `day` buckets (UTC; counted by whole hours,
/// so the hours holding `from` and `to` count whole), for one caller or all, within the given
/// projects (`None`: all); at most `entries` entries (one per bucket, caller and project),
/// starting after `after`.
#[derive(Debug, Clone)]
pub struct UsageQuery<'a> {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: &'a str,
    pub actor_id: Option<&'a str>,
    pub projects: Option<Vec<Uuid>>,
    pub after: Option<EntryKey>,
    pub entries: i64,
}

/// The rows of the entries `query` asks for, ordered by entry (bucket, then caller, then
/// project), each entry's rows adjacent.
pub async fn usage(
    executor: impl PgExecutor<'_>,
    query: &UsageQuery<'_>,
) -> sqlx::Result<Vec<UsageRow>> {
    let after = query.after.as_ref();
    sqlx::query_as(
        "WITH counts AS ( \
           SELECT hour, actor_type, actor_id, project_id, route, method, status_class, requests \
             FROM usage_hourly \
           UNION ALL \
           SELECT date_trunc('hour', occurred_at, 'UTC'), actor_type, actor_id, project_id, route, \
                  method, CASE WHEN outcome = 'replayed' THEN 'replayed' \
                               ELSE (status / 100)::text || 'xx' END, 1 \
             FROM request_log WHERE seq > (SELECT seq FROM usage_checkpoint)), \
         grouped AS ( \
           SELECT date_trunc($3, hour, 'UTC') AS bucket, actor_type, actor_id, project_id, route, \
                  method, status_class, sum(requests)::bigint AS requests \
             FROM counts \
            WHERE hour >= date_trunc($3, $1, 'UTC') AND hour < $2 \
              AND ($4::text IS NULL OR actor_id = $4) AND ($5::uuid[] IS NULL OR project_id = ANY($5)) \
            GROUP BY 1, 2, 3, 4, 5, 6, 7), \
         keyed AS ( \
           SELECT *, (bucket, coalesce(actor_id, ''), coalesce(actor_type, ''), \
                      coalesce(project_id, '00000000-0000-0000-0000-000000000000')) AS entry \
             FROM grouped), \
         ranked AS ( \
           SELECT *, dense_rank() OVER (ORDER BY entry) AS n FROM keyed \
            WHERE $6::timestamptz IS NULL OR entry > ($6, $7::text, $8::text, $9::uuid)) \
         SELECT bucket, actor_type, actor_id, project_id, route, method, status_class, requests \
           FROM ranked WHERE n <= $10 ORDER BY entry, route, method, status_class",
    )
    .bind(query.from)
    .bind(query.to)
    .bind(query.granularity)
    .bind(query.actor_id)
    .bind(query.projects.clone())
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.as_str()))
    .bind(after.map(|a| a.2.as_str()))
    .bind(after.map(|a| a.3))
    .bind(query.entries)
    .fetch_all(executor)
    .await
}

/// Jobs by status, active keys, jobs created in each of the last 24 hours, average processing
/// time and outcomes of jobs finished in the last 24 h.
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    pub by_status: Vec<(String, i64)>,
    pub active_keys: i64,
    /// One entry per hour, oldest first, hours without jobs included: the 23 whole hours
    /// before the current one, and the current one so far; deleted jobs left out, as in
    /// `by_status`.
    pub created_per_hour: Vec<(DateTime<Utc>, i64)>,
    pub average_processing_seconds: Option<f64>,
    /// Every job that reached an end: succeeded, failed or cancelled.
    pub finished_last_24h: i64,
    pub succeeded_last_24h: i64,
    pub failed_last_24h: i64,
}

/// Keys neither revoked nor expired.
const ACTIVE_KEYS_SQL: &str = "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL \
    AND (expires_at IS NULL OR expires_at > now())";

pub async fn job_stats(pool: &sqlx::PgPool) -> sqlx::Result<JobStats> {
    let by_status = sqlx::query_as(
        "SELECT status, count(*) FROM jobs WHERE NOT deleted GROUP BY status ORDER BY status",
    )
    .fetch_all(pool)
    .await?;
    let active_keys = sqlx::query_scalar(ACTIVE_KEYS_SQL).fetch_one(pool).await?;
    let created_per_hour = sqlx::query_as(
        "WITH hours AS (SELECT generate_series(date_trunc('hour', now(), 'UTC') - interval '23 hours', \
                                               date_trunc('hour', now(), 'UTC'), interval '1 hour') AS hour), \
              created AS (SELECT date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS jobs \
                            FROM jobs WHERE created_at >= (SELECT min(hour) FROM hours) AND NOT deleted \
                           GROUP BY 1) \
         SELECT hour, coalesce(jobs, 0) FROM hours LEFT JOIN created USING (hour) ORDER BY hour",
    )
    .fetch_all(pool)
    .await?;
    let (average, finished, succeeded, failed): (Option<f64>, i64, i64, i64) = sqlx::query_as(
        "SELECT (avg(extract(epoch FROM finished_at - (doc->>'started_at')::timestamptz)) \
                   FILTER (WHERE status IN ('succeeded', 'failed')))::float8, \
                count(*), count(*) FILTER (WHERE status = 'succeeded'), \
                count(*) FILTER (WHERE status = 'failed') \
           FROM jobs WHERE finished_at >= now() - interval '24 hours' AND NOT deleted",
    )
    .fetch_one(pool)
    .await?;
    Ok(JobStats {
        by_status,
        active_keys,
        created_per_hour,
        average_processing_seconds: average,
        finished_last_24h: finished,
        succeeded_last_24h: succeeded,
        failed_last_24h: failed,
    })
}

/// The last 24 hours of the request log as security sees it.
#[derive(Debug, Clone, Default)]
pub struct SecurityStats {
    pub failed_authentications: i64,
    pub forbidden: i64,
    pub rate_limited: i64,
    pub requests: i64,
    /// Keys neither revoked nor expired.
    pub active_keys: i64,
    /// Client networks with the most refused requests (401, 403, 429): `(network,
    /// refusals)`, each network as its budget counts it (`client_network`: an IPv6 client's
    /// /64 by default), so an attacker spreading over its /64 shows as one.
    pub top_refused_ips: Vec<(String, i64)>,
}

/// The refusals of the last 24 hours by status, read through the partial index
/// `request_log_refused` (migration 0022), which holds refused calls only.
pub const REFUSED_SQL: &str = "SELECT count(*) FILTER (WHERE status = 401), \
        count(*) FILTER (WHERE status = 403), count(*) FILTER (WHERE status = 429) \
   FROM request_log WHERE occurred_at >= now() - interval '24 hours' AND status IN (401, 403, 429)";

/// The refusals of the last 24 hours per client address, through the same index (grouped
/// into networks by `security_stats`).
pub const TOP_REFUSED_IPS_SQL: &str = "SELECT client_ip, count(*) FROM request_log \
  WHERE occurred_at >= now() - interval '24 hours' AND status IN (401, 403, 429) \
    AND client_ip IS NOT NULL \
  GROUP BY client_ip";

/// The last 24 hours for `GET /admin/security`: the records counted through
/// `request_log_by_time` (an index-only count once the log is vacuumed), the refusals through
/// `request_log_refused`, and the active keys, all from one snapshot and one `now()`, so the
/// figures agree with each other (no more refusals than records) however busy the log is.
/// `ipv6_prefix`: the prefix length of an IPv6 client's network (`client_network`).
pub async fn security_stats(pool: &sqlx::PgPool, ipv6_prefix: u8) -> sqlx::Result<SecurityStats> {
    let mut snapshot = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *snapshot)
        .await?;
    let requests: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM request_log WHERE occurred_at >= now() - interval '24 hours'",
    )
    .fetch_one(&mut *snapshot)
    .await?;
    let (failed, forbidden, limited): (i64, i64, i64) = sqlx::query_as(REFUSED_SQL)
        .fetch_one(&mut *snapshot)
        .await?;
    let per_address: Vec<(String, i64)> = sqlx::query_as(TOP_REFUSED_IPS_SQL)
        .fetch_all(&mut *snapshot)
        .await?;
    let active_keys: i64 = sqlx::query_scalar(ACTIVE_KEYS_SQL)
        .fetch_one(&mut *snapshot)
        .await?;
    snapshot.commit().await?;
    let mut per_network = std::collections::HashMap::<String, i64>::new();
    for (address, refusals) in per_address {
        *per_network
            .entry(client_network_of(&address, ipv6_prefix))
            .or_default() += refusals;
    }
    let mut top_refused_ips: Vec<(String, i64)> = per_network.into_iter().collect();
    top_refused_ips.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_refused_ips.truncate(10);
    Ok(SecurityStats {
        failed_authentications: failed,
        forbidden,
        rate_limited: limited,
        requests,
        active_keys,
        top_refused_ips,
    })
}
