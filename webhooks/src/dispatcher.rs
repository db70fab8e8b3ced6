//! The dispatcher: claims due deliveries with `FOR UPDATE SKIP LOCKED` and a lease longer than
//! the request timeout (so no two replicas send one delivery at once), sends each, records the
//! attempt, and schedules the next one in PostgreSQL (`next_attempt_at`), never only in memory:
//! a delivery whose sender died is claimed again when its lease runs out. Endpoints already at
//! their concurrency cap are left out of a claim, so one slow receiver never fills the
//! dispatcher; an endpoint's `rate_limit_per_second` defers its deliveries without using an
//! attempt. A `410 Gone` disables the endpoint, as does failing for longer than the configured
//! period with its retries exhausted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_domain::webhook_endpoint::{EndpointCommand, EndpointSettings, WebhookEndpoint};
use herald_store::{AggregateStore, EventMetadata};
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::inbox::Inbox;
use crate::sender::{Message, Outcome, Sender};
use crate::signature::SigningSecret;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Delay before each attempt: the first is usually 0 (at once).
    pub schedule: Vec<Duration>,
    pub request_timeout: Duration,
    pub per_endpoint_concurrency: usize,
    pub poll_interval: Duration,
    /// An endpoint failing this long, with a delivery's retries exhausted, is disabled.
    pub disable_after: Duration,
}

/// A claimed (or handed-over) delivery.
#[derive(sqlx::FromRow)]
pub(crate) struct Due {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub webhook_id: String,
    pub payload: Value,
    pub attempts: i32,
    /// The endpoint's settings and whether it is enabled (and not deleted), read in the claim.
    pub settings: sqlx::types::Json<EndpointSettings>,
    pub active: bool,
    /// The secrets that sign now, newest first.
    pub secrets: Vec<String>,
}

/// How long a dispatcher holds a delivery it sends: longer than the request timeout, so no
/// other replica claims it while an attempt may still be under way.
pub fn lease_for(request_timeout: Duration) -> Duration {
    request_timeout * 2 + Duration::from_secs(5)
}

pub struct Dispatcher {
    pool: PgPool,
    sender: Arc<Sender>,
    config: DispatchConfig,
    inbox: Arc<Inbox>,
    endpoints: AggregateStore<WebhookEndpoint>,
    in_flight: Mutex<HashMap<Uuid, usize>>,
    /// Per endpoint: when its next send is due at the steady rate (the `rate_limit_per_second`
    /// gate, GCRA with a burst of one second's worth).
    next_send: Mutex<HashMap<Uuid, Instant>>,
}

/// Loads the secrets that sign now (the current one and any still in a rotation's grace).
pub async fn active_secrets(pool: &PgPool, endpoint: Uuid) -> sqlx::Result<Vec<SigningSecret>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT secret FROM webhook_secrets WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
    )
    .bind(endpoint)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|s| SigningSecret::parse(s))
        .collect())
}

impl Dispatcher {
    pub fn new(
        pool: PgPool,
        sender: Arc<Sender>,
        config: DispatchConfig,
        inbox: Arc<Inbox>,
    ) -> Self {
        Self {
            endpoints: AggregateStore::new(pool.clone()),
            pool,
            sender,
            config,
            inbox,
            in_flight: Mutex::new(HashMap::new()),
            next_send: Mutex::new(HashMap::new()),
        }
    }

    fn lease(&self) -> Duration {
        lease_for(self.config.request_timeout)
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        while !cancel.is_cancelled() {
            // Deliveries the projector just recorded (already leased to us) go first; the
            // next turn claims whatever else is due.
            let handed = self.inbox.take();
            let claimed = if !handed.is_empty() {
                handed
            } else {
                match self.claim(64).await {
                    Ok(claimed) => claimed,
                    Err(error) => {
                        tracing::warn!(%error, "could not claim webhook deliveries");
                        Vec::new()
                    }
                }
            };
            let idle = claimed.is_empty();
            let mut over_cap = Vec::new();
            for due in claimed {
                {
                    let mut in_flight = self.in_flight.lock().expect("lock");
                    let count = in_flight.entry(due.endpoint_id).or_default();
                    if *count >= self.config.per_endpoint_concurrency {
                        over_cap.push(due.id);
                        continue;
                    }
                    *count += 1;
                }
                let this = self.clone();
                tasks.spawn(async move {
                    let endpoint = due.endpoint_id;
                    if let Err(error) = this.deliver(due).await {
                        tracing::warn!(%error, "a webhook delivery could not be recorded");
                    }
                    let mut in_flight = this.in_flight.lock().expect("lock");
                    if let Some(n) = in_flight.get_mut(&endpoint) {
                        *n -= 1;
                        if *n == 0 {
                            in_flight.remove(&endpoint);
                        }
                    }
                    drop(in_flight);
                    this.inbox.wake();
                });
            }
            if !over_cap.is_empty() {
                // Claimed in the same batch as the endpoint's last free slots: back to the queue.
                if let Err(error) = self.release(&over_cap).await {
                    tracing::warn!(%error, "could not release webhook deliveries");
                }
            }
            if idle || !over_cap.is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = self.inbox.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Leases up to `limit` due deliveries of endpoints below their concurrency cap; none while
    /// the projector is rebuilding its copy of the endpoints from the log's start, which then
    /// holds old versions of them (a URL since changed, `disabled` since enabled).
    async fn claim(&self, limit: i64) -> sqlx::Result<Vec<Due>> {
        let saturated: Vec<Uuid> = self
            .in_flight
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, n)| **n >= self.config.per_endpoint_concurrency)
            .map(|(id, _)| *id)
            .collect();
        sqlx::query_as(
            "UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $2), updated_at = now() \
               FROM (SELECT id FROM webhook_deliveries \
                      WHERE status = 'pending' AND next_attempt_at <= now() \
                        AND (leased_until IS NULL OR leased_until < now()) AND endpoint_id <> ALL($3) \
                        AND NOT EXISTS (SELECT 1 FROM projection_checkpoints c WHERE c.name = 'webhooks' \
                              AND (c.tx_id, c.global_position) < (c.rebuild_tx, c.rebuild_position)) \
                      ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, \
                    webhook_endpoints e \
              WHERE d.id = due.id AND e.id = d.endpoint_id \
          RETURNING d.id, d.endpoint_id, d.webhook_id, d.payload, d.attempts, e.doc AS settings, \
                    (e.enabled AND NOT e.deleted) AS active, \
                    ARRAY(SELECT s.secret FROM webhook_secrets s WHERE s.endpoint_id = d.endpoint_id \
                            AND (s.expires_at IS NULL OR s.expires_at > now()) ORDER BY s.id DESC) AS secrets",
        )
        .bind(limit)
        .bind(self.lease().as_secs_f64())
        .bind(saturated)
        .fetch_all(&self.pool)
        .await
    }

    /// Gives deliveries claimed over an endpoint's cap back to the queue. The rows are locked
    /// in the order replays rewrite an endpoint's deliveries in (by log position); a statement
    /// still chosen as a deadlock's victim (or failing otherwise) is tried again twice, since a
    /// delivery not released waits out its whole lease before it is sent.
    async fn release(&self, ids: &[Uuid]) -> sqlx::Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            let released = sqlx::query(
                "UPDATE webhook_deliveries SET leased_until = NULL \
                  WHERE id IN (SELECT id FROM webhook_deliveries WHERE id = ANY($1) \
                                ORDER BY endpoint_id, global_position FOR UPDATE)",
            )
            .bind(ids)
            .execute(&self.pool)
            .await;
            match released {
                Ok(_) => return Ok(()),
                Err(error) if tries < 3 => {
                    tracing::debug!(%error, "releasing webhook deliveries again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the endpoint's rate allows one more send now; otherwise how long until it does.
    /// At `limit` per second a burst of `limit` may go at once, then one every `1/limit` s.
    fn take_rate_slot(&self, endpoint: Uuid, limit: Option<u32>) -> Result<(), Duration> {
        let Some(limit) = limit.filter(|l| *l > 0) else {
            return Ok(());
        };
        let interval = Duration::from_secs(1) / limit;
        let now = Instant::now();
        let mut next_send = self.next_send.lock().expect("lock");
        let tat = next_send.get(&endpoint).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        if new_tat - now > Duration::from_secs(1) {
            return Err(new_tat - now - Duration::from_secs(1));
        }
        next_send.insert(endpoint, new_tat);
        Ok(())
    }

    async fn deliver(&self, due: Due) -> anyhow::Result<()> {
        if !due.active {
            // Disabled or deleted since the delivery was recorded: it is not sent (a replay
            // after re-enabling sends it).
            return self
                .finish(&due, "failed", None, Some("endpoint disabled"), None)
                .await;
        };
        if let Err(wait) = self.take_rate_slot(due.endpoint_id, due.settings.rate_limit_per_second)
        {
            let wait = wait.max(Duration::from_millis(20)).as_secs_f64();
            sqlx::query("UPDATE webhook_deliveries SET leased_until = NULL, next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1")
                .bind(due.id)
                .bind(wait)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let settings = &due.settings;
        let secrets: Vec<SigningSecret> = due
            .secrets
            .iter()
            .filter_map(|s| SigningSecret::parse(s))
            .collect();
        let body = serde_json::to_vec(&due.payload)?;
        let outcome = self
            .sender
            .send(Message {
                url: &settings.url,
                webhook_id: &due.webhook_id,
                body: &body,
                secrets: &secrets,
                endpoint: due.endpoint_id,
                headers: &settings.headers,
            })
            .await;
        let attempts = due.attempts + 1;
        if outcome.succeeded() {
            return self.record_success(&due, &outcome, attempts).await;
        }
        record_attempt(&self.pool, due.id, &outcome, false).await?;
        let error = outcome.error_class.as_deref();
        if outcome.status == Some(410) {
            self.disable(due.endpoint_id, "the receiver answered 410 Gone")
                .await;
            return self
                .finish(&due, "failed", outcome.status, error, Some(attempts))
                .await;
        }
        match self.next_delay(attempts as usize, &outcome) {
            Some(delay) => {
                let at = Utc::now() + chrono::Duration::from_std(delay)?;
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = $2, next_attempt_at = $3, leased_until = NULL, \
                       last_status = $4, last_error = $5, updated_at = now() WHERE id = $1",
                )
                .bind(due.id)
                .bind(attempts)
                .bind(at)
                .bind(outcome.status.map(i32::from))
                .bind(error)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
            None => {
                self.finish(&due, "failed", outcome.status, error, Some(attempts))
                    .await?;
                self.disable_if_failing_too_long(due.endpoint_id).await
            }
        }
    }

    /// The wait before the next attempt, or `None` when the schedule is used up: the
    /// schedule's delay with ±20 % jitter, at least 60 s after a timeout or a 429, and a
    /// receiver's `Retry-After` honoured up to a day.
    pub fn next_delay(&self, attempts_made: usize, outcome: &Outcome) -> Option<Duration> {
        let base = *self.config.schedule.get(attempts_made)?;
        let jitter = rand::thread_rng().gen_range(0.8..=1.2);
        let mut delay = base.mul_f64(jitter);
        if outcome.error_class.as_deref() == Some("timeout") || outcome.status == Some(429) {
            delay = delay.max(Duration::from_secs(60));
        }
        if let Some(asked) = outcome.retry_after {
            delay = delay.max(asked.min(Duration::from_secs(86_400)));
        }
        Some(delay)
    }

    /// The attempt and the delivery's new state in one statement (the common case).
    async fn record_success(
        &self,
        due: &Due,
        outcome: &Outcome,
        attempts: i32,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "WITH attempt AS ( \
               INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code, response_body, manual) \
               VALUES ($1, now(), $2, $3, $4, false)) \
             UPDATE webhook_deliveries SET status = 'succeeded', leased_until = NULL, last_status = $3, \
               last_error = NULL, attempts = $5, updated_at = now() WHERE id = $1",
        )
        .bind(due.id)
        .bind(outcome.duration.as_secs_f64() * 1000.0)
        .bind(outcome.status.map(i32::from))
        .bind(&outcome.body)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish(
        &self,
        due: &Due,
        status: &str,
        code: Option<u16>,
        error: Option<&str>,
        attempts: Option<i32>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, leased_until = NULL, last_status = coalesce($3, last_status), \
               last_error = $4, attempts = coalesce($5, attempts), updated_at = now() WHERE id = $1",
        )
        .bind(due.id)
        .bind(status)
        .bind(code.map(i32::from))
        .bind(error)
        .bind(attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Disables the endpoint when it has been failing for longer than `disable_after`: since
    /// its first failed attempt after its last success (not since it was created or last
    /// succeeded, which can be long before it started failing).
    async fn disable_if_failing_too_long(&self, endpoint: Uuid) -> anyhow::Result<()> {
        let failing_since: Option<DateTime<Utc>> = sqlx::query_scalar(
            "WITH mine AS (SELECT a.attempted_at, a.error_class FROM webhook_attempts a \
                             JOIN webhook_deliveries d ON d.id = a.delivery_id \
                            WHERE d.endpoint_id = $1) \
             SELECT min(attempted_at) FROM mine \
              WHERE error_class IS NOT NULL \
                AND attempted_at > coalesce((SELECT max(attempted_at) FROM mine \
                                              WHERE error_class IS NULL), '-infinity')",
        )
        .bind(endpoint)
        .fetch_one(&self.pool)
        .await?;
        let since = failing_since.unwrap_or_else(Utc::now);
        if Utc::now() - since > chrono::Duration::from_std(self.config.disable_after)? {
            self.disable(
                endpoint,
                "deliveries kept failing and their retries are exhausted",
            )
            .await;
        }
        Ok(())
    }

    async fn disable(&self, endpoint: Uuid, reason: &str) {
        let command = EndpointCommand::Disable {
            reason: reason.to_owned(),
            now: Utc::now(),
        };
        let metadata = EventMetadata::system("webhook-dispatcher");
        if let Err(error) = self
            .endpoints
            .execute(&endpoint.to_string(), command, &metadata, true)
            .await
        {
            tracing::warn!(%endpoint, error = %error, "could not disable a webhook endpoint");
        }
    }
}

/// Stores one attempt (the response body is already cut to 20 kB).
pub async fn record_attempt(
    pool: &PgPool,
    delivery: Uuid,
    outcome: &Outcome,
    manual: bool,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempted_at, duration_ms, status_code, error_class, response_body, manual) \
         VALUES ($1, now(), $2, $3, $4, $5, $6)",
    )
    .bind(delivery)
    .bind(outcome.duration.as_secs_f64() * 1000.0)
    .bind(outcome.status.map(i32::from))
    .bind(&outcome.error_class)
    .bind(&outcome.body)
    .bind(manual)
    .execute(pool)
    .await?;
    Ok(())
}
