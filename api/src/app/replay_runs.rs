//! Running replays. One server at a time runs a replay, holding it for a lease that each page
//! of the log it queues renews. A page's deliveries and the replay's progress commit together,
//! under a lock on the replay's row, so a page is counted once and two runners never work at
//! once. When the server running a replay stops (a restart, a crash), any server takes it over
//! once the lease has run out (`resume_abandoned`, every few seconds) and goes on from the last
//! page committed, so a replay never stays `running` for good. A run stopped by a database
//! error (a deadlock with the projector, a dropped connection) gives its lease up at once and
//! is run again the same way, up to `MAX_FAILURES` times.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::webhook_endpoint::EndpointState;
use herald_webhooks::projector::{audience, payload, webhook_id};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::state::AppState;

/// How long a runner holds a replay without committing a page before others may take it.
pub const LEASE_SECONDS: i32 = 30;

/// How long a run waits for the dispatcher's copy of its endpoint (`caught_up`).
const CATCH_UP: Duration = Duration::from_secs(10);

/// Runs replay `id` under the `runner` token its row was just given, and records the outcome:
/// `completed`, `failed` when it cannot be run (its endpoint is gone, or its copy did not catch
/// up), and after a database error its lease given up, so that the next look for abandoned
/// replays runs it again from its last page (`failed` after `MAX_FAILURES` such errors).
pub fn spawn(state: Arc<AppState>, id: Uuid, runner: Uuid) {
    tokio::spawn(async move {
        let recorded = match drive(&state, id, runner).await {
            Ok(Ended::Done) => finish(&state.pool, id, runner, "completed").await,
            Ok(Ended::Lost) => return,
            Ok(Ended::Refused(why)) => {
                tracing::error!(replay = %id, error = why, "a webhook replay failed");
                finish(&state.pool, id, runner, "failed").await
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(replay = %id, %error, "a webhook replay stopped; it runs again");
                give_up_lease(&state.pool, id, runner).await
            }
        };
        if let Err(error) = recorded {
            tracing::warn!(replay = %id, %error, "could not record how a webhook replay ended");
        }
        state.dispatcher_inbox.wake();
    });
}

/// Ends the run with `status` (`completed` or `failed`), if it still holds the replay.
async fn finish(pool: &PgPool, id: Uuid, runner: Uuid, status: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_replays SET status = $3, finished_at = now(), leased_until = NULL \
          WHERE id = $1 AND runner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(runner)
    .bind(status)
    .execute(pool)
    .await?;
    Ok(())
}

/// After a database error: counts it and gives the lease up at once, so the next look for
/// abandoned replays runs it again; the `MAX_FAILURES`th error ends it `failed` instead.
async fn give_up_lease(pool: &PgPool, id: Uuid, runner: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE webhook_replays SET failures = failures + 1, leased_until = clock_timestamp(), \
                status = CASE WHEN failures + 1 >= $3 THEN 'failed' ELSE status END, \
                finished_at = CASE WHEN failures + 1 >= $3 THEN now() END \
          WHERE id = $1 AND runner = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(runner)
    .bind(MAX_FAILURES)
    .execute(pool)
    .await?;
    Ok(())
}

/// Database errors after which a replay is `failed` rather than run again.
const MAX_FAILURES: i32 = 5;

/// Takes over the oldest running replay whose lease ran out, if any, and runs it from where it
/// stopped; whether it took one. One a look, so that a server taking over after another
/// stopped spreads the replays over the looks (and the servers) rather than starting them all.
pub async fn resume_abandoned(state: &Arc<AppState>) -> sqlx::Result<bool> {
    let runner = Uuid::now_v7();
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "UPDATE webhook_replays SET runner = $1, leased_until = clock_timestamp() + make_interval(secs => $2) \
          WHERE id = (SELECT id FROM webhook_replays \
                       WHERE status = 'running' AND (leased_until IS NULL OR leased_until < now()) \
                       ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
          RETURNING id",
    )
    .bind(runner)
    .bind(LEASE_SECONDS)
    .fetch_optional(&state.pool)
    .await?;
    let Some(id) = claimed else {
        return Ok(false);
    };
    tracing::info!(replay = %id, "taking over a webhook replay whose runner stopped");
    spawn(state.clone(), id, runner);
    Ok(true)
}

/// `resume_abandoned` at once and then every `interval`, until `cancel`.
pub async fn resume_periodically(
    state: Arc<AppState>,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        if let Err(error) = resume_abandoned(&state).await {
            tracing::warn!(%error, "could not look for abandoned webhook replays");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

enum Ended {
    /// Every page is queued.
    Done,
    /// It cannot be run (why).
    Refused(String),
    /// Another runner holds the replay now (this one's lease ran out), or it ended.
    Lost,
}

/// What a run needs of its replay's row.
#[derive(sqlx::FromRow)]
struct Plan {
    endpoint_id: Uuid,
    to_position: i64,
    event_types: Option<Vec<String>>,
    only_failed: bool,
}

async fn drive(state: &AppState, id: Uuid, runner: Uuid) -> anyhow::Result<Ended> {
    let plan: Plan = sqlx::query_as(
        "SELECT endpoint_id, to_position, event_types, only_failed FROM webhook_replays WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&state.pool)
    .await?;
    let (endpoint, version) = state
        .webhook_endpoints
        .load(&plan.endpoint_id.to_string())
        .await?;
    let Some(endpoint) = endpoint.state().cloned() else {
        return Ok(Ended::Refused("the endpoint is gone".into()));
    };
    if !caught_up(&state.pool, plan.endpoint_id, version as i64).await {
        // Queued now, its messages would meet the endpoint as it was (disabled, say) and fail
        // at once: better reported failed, to be asked again.
        let why =
            format!("the dispatcher's copy of the endpoint did not catch up within {CATCH_UP:?}");
        return Ok(Ended::Refused(why));
    }
    loop {
        // A connection a page, not one for the whole run, which a long replay would hold from
        // the API's pool (and from a shutdown closing it).
        let mut tx = state.pool.begin().await?;
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT scanned_until FROM webhook_replays \
              WHERE id = $1 AND runner = $2 AND status = 'running' FOR UPDATE",
        )
        .bind(id)
        .bind(runner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(after) = held else {
            return Ok(Ended::Lost);
        };
        if after >= plan.to_position {
            return Ok(Ended::Done);
        }
        let (last, queued) = queue_page(&mut tx, &plan, &endpoint, after).await?;
        sqlx::query(
            "UPDATE webhook_replays SET scanned_until = $2, queued = queued + $3, \
               leased_until = clock_timestamp() + make_interval(secs => $4) WHERE id = $1",
        )
        .bind(id)
        .bind(last.unwrap_or(plan.to_position))
        .bind(queued)
        .bind(LEASE_SECONDS)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        state.dispatcher_inbox.wake();
    }
}

/// Queues (again) the endpoint's deliveries of the next page of the log after `after`; the
/// page's last position (`None`: the log holds nothing more up to the replay's end) and how
/// many deliveries were queued.
async fn queue_page(
    conn: &mut PgConnection,
    plan: &Plan,
    endpoint: &EndpointState,
    after: i64,
) -> sqlx::Result<(Option<i64>, i64)> {
    // An account-wide endpoint hears every project; a project's endpoint only its own.
    let scope = endpoint.project_id.map(|p| p.as_uuid());
    let events = herald_store::log::read_range(&mut *conn, after, plan.to_position, 500).await?;
    let mut queued = 0_i64;
    for event in &events {
        let wanted = endpoint.settings.wants(&event.event_type)
            && (plan.event_types.as_ref()).is_none_or(|types| types.contains(&event.event_type));
        if !wanted || scope.is_some_and(|own| audience(event) != Some(own)) {
            continue;
        }
        let result = sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, global_position, event_type, webhook_id, payload, status, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', now()) \
             ON CONFLICT (endpoint_id, global_position) DO UPDATE SET status = 'pending', attempts = 0, \
               next_attempt_at = now(), leased_until = NULL, updated_at = now() \
             WHERE (NOT $7 OR webhook_deliveries.status = 'failed') \
               AND (webhook_deliveries.leased_until IS NULL OR webhook_deliveries.leased_until < now())",
        )
        .bind(Uuid::now_v7())
        .bind(plan.endpoint_id)
        .bind(event.global_position)
        .bind(&event.event_type)
        .bind(webhook_id(plan.endpoint_id, event.global_position))
        .bind(payload(event))
        .bind(plan.only_failed)
        .execute(&mut *conn)
        .await?;
        queued += result.rows_affected() as i64;
    }
    Ok((events.last().map(|e| e.global_position), queued))
}

/// Waits (up to `CATCH_UP`) until the projector's copy of the endpoint has seen `version`, so
/// the dispatcher does not find the endpoint disabled when it was just re-enabled; false when
/// it has not by then.
async fn caught_up(pool: &PgPool, endpoint: Uuid, version: i64) -> bool {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while tokio::time::Instant::now() < deadline {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT version FROM webhook_endpoints WHERE id = $1")
                .bind(endpoint)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        if seen.is_some_and(|seen| seen >= version) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
