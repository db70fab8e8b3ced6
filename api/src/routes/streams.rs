//! Server-sent event streams of the log. `log` follows the whole log with the gap-free reader
//! (`(tx_id, global_position)` up to the horizon), so a stream resumed from `Last-Event-ID` (a
//! global position) continues exactly after that event: nothing lost, nothing repeated. `job`
//! follows one job by its own sequence, which its aggregate only ever appends in order. Both
//! wait for the log to grow on the process's stream wake-up (local appends and other replicas'
//! `NOTIFY`), with a one-second poll as the fallback. Before each read, the `Listener` is checked
//! again: a stream whose caller may no longer read it ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use herald_domain::ProjectId;
use herald_store::search::Visible;
use herald_store::{Position, StoredEvent};
use tokio::sync::watch;
use uuid::Uuid;

use super::events::{render, LogEvent};
use super::listener::Listener;
use crate::state::AppState;

const PAGE: i64 = 200;
const POLL: Duration = Duration::from_secs(1);

/// What a log stream sends: what the caller may see, optionally only some event types.
pub struct LogFilter {
    pub visible: Visible,
    pub event_types: Option<Vec<String>>,
}

impl LogFilter {
    fn wants(&self, event: &StoredEvent) -> bool {
        let typed = self
            .event_types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type));
        typed && self.visible.shows(event.project_id, &event.aggregate_type)
    }
}

/// Where a stream starts: after the event at `last_event_id`, or, without one, at the horizon
/// (every event whose transaction has not finished yet, and all later ones). `None`: unknown id.
pub async fn start(state: &AppState, last_event_id: Option<i64>) -> sqlx::Result<Option<Position>> {
    match last_event_id {
        Some(position) => {
            let tx_id: Option<i64> = sqlx::query_scalar(
                "SELECT tx_id::text::bigint FROM events WHERE global_position = $1",
            )
            .bind(position)
            .fetch_optional(&state.pool)
            .await?;
            Ok(tx_id.map(|tx_id| Position {
                tx_id,
                global_position: position,
            }))
        }
        None => {
            let horizon: i64 =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(&state.pool)
                    .await?;
            Ok(Some(Position {
                tx_id: horizon - 1,
                global_position: i64::MAX,
            }))
        }
    }
}

struct LogCursor {
    state: Arc<AppState>,
    listener: Listener,
    after: Position,
    filter: LogFilter,
    ready: VecDeque<LogEvent>,
    wake: watch::Receiver<u64>,
}

/// The log from `after` on, as the caller may see it, for as long as the client listens.
pub fn log(
    state: Arc<AppState>,
    listener: Listener,
    after: Position,
    filter: LogFilter,
) -> BoxStream<'static, LogEvent> {
    let wake = state.stream_wake.subscribe();
    let cursor = LogCursor {
        state,
        listener,
        after,
        filter,
        ready: VecDeque::new(),
        wake,
    };
    Box::pin(futures::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if cursor.ready.is_empty() || cursor.listener.due() {
                // What the caller may see now, events already read but not sent included.
                let caller = cursor.listener.caller(&cursor.state).await;
                cursor.filter.visible = caller?.event_visibility().ok()?;
                let filter = &cursor.filter;
                (cursor.ready).retain(|e| filter.visible.shows(e.project_id, &e.aggregate_type));
            }
            if let Some(event) = cursor.ready.pop_front() {
                return Some((event, cursor));
            }
            match next_page(&mut cursor).await {
                Ok(true) => continue,
                Ok(false) => wait(&mut cursor.wake).await,
                Err(error) => {
                    tracing::warn!(%error, "an event stream could not read the log");
                    return None;
                }
            }
        }
    }))
}

/// Reads the next page; whether it held any event (sent or not).
async fn next_page(cursor: &mut LogCursor) -> anyhow::Result<bool> {
    let mut conn = cursor.state.pool.acquire().await?;
    let events = herald_store::log::read_after(&mut *conn, cursor.after, PAGE).await?;
    let Some(last) = events.last() else {
        return Ok(false);
    };
    cursor.after = last.position();
    for event in events {
        if cursor.filter.wants(&event) {
            cursor.ready.push_back(render(event));
        }
    }
    Ok(true)
}

async fn wait(wake: &mut watch::Receiver<u64>) {
    let _ = tokio::time::timeout(POLL, wake.changed()).await;
}

/// One job's events after its event at sequence `after`, for as long as the client listens and
/// may read the jobs of the job's `project`.
pub fn job(
    state: Arc<AppState>,
    listener: Listener,
    (id, project): (Uuid, ProjectId),
    after: i64,
) -> BoxStream<'static, LogEvent> {
    let wake = state.stream_wake.subscribe();
    let cursor = JobCursor {
        state,
        listener,
        after,
        ready: VecDeque::new(),
        wake,
    };
    Box::pin(futures::stream::unfold(
        cursor,
        move |mut cursor| async move {
            loop {
                let check = cursor.ready.is_empty() || cursor.listener.due();
                if check && !cursor.listener.reads_jobs_of(&cursor.state, project).await {
                    return None;
                }
                if let Some(event) = cursor.ready.pop_front() {
                    return Some((event, cursor));
                }
                let history = herald_store::log::aggregate_history_after(
                    &cursor.state.pool,
                    "job",
                    &id.to_string(),
                    cursor.after,
                )
                .await;
                match history {
                    Ok(events) if events.is_empty() => wait(&mut cursor.wake).await,
                    Ok(events) => {
                        for event in events {
                            cursor.after = event.sequence;
                            cursor.ready.push_back(render(event));
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "a job's event stream could not read the log");
                        return None;
                    }
                }
            }
        },
    ))
}

struct JobCursor {
    state: Arc<AppState>,
    listener: Listener,
    /// The sequence of the job's last event read.
    after: i64,
    ready: VecDeque<LogEvent>,
    wake: watch::Receiver<u64>,
}
