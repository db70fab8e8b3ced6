//! The server's background tasks, all stopped by one `CancellationToken` and awaited through
//! one `TaskTracker`: a runner per projection, the LISTEN connection that wakes them, the
//! coalescing announcer of appended events, the credential
//! cache invalidator (keys and users), the key-usage flusher, the lease reconciler, the expiry
//! sweeper, the taking over of abandoned webhook replays and the forgetting of expired idempotency keys.

use std::sync::Arc;
use std::time::Duration;

use herald_projections::runtime::LogWakeups;
use herald_projections::ProjectionRunner;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::expiry::ExpirySweeper;
use crate::reconciler::LeaseReconciler;
use crate::state::AppState;

pub fn spawn(state: &Arc<AppState>, tracker: &TaskTracker, cancel: &CancellationToken) {
    let poll = Duration::from_millis(state.config.projections.poll_interval_ms);
    for projection in state.projections.clone() {
        let wake = state
            .wakeups
            .iter()
            .find(|(name, _)| *name == projection.name())
            .map(|(_, wake)| wake.clone())
            .expect("a wake-up per projection");
        let runner = ProjectionRunner::new(state.pool.clone(), projection, wake, poll);
        tracker.spawn(runner.run(cancel.clone()));
    }
    let streams = state
        .wakeups
        .iter()
        .find(|(name, _)| *name == crate::state::STREAMS)
        .map(|(_, wake)| wake.clone())
        .expect("a wake-up for event streams");
    let stream_wake = state.stream_wake.clone();
    let stop = cancel.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = streams.notified() => stream_wake.send_modify(|n| *n = n.wrapping_add(1)),
            }
        }
    });
    let local: Vec<_> = state.wakeups.iter().map(|(_, w)| w.clone()).collect();
    let origin = state.announcer.origin().to_owned();
    tracker.spawn(LogWakeups::new(local, origin).run(state.pool.clone(), cancel.clone()));
    tracker.spawn(
        state
            .announcer
            .clone()
            .run(state.pool.clone(), cancel.clone()),
    );
    tracker.spawn(crate::auth::changes::follow(
        state.verifier.clone(),
        state.users_directory.clone(),
        state.pool.clone(),
        cancel.clone(),
    ));
    tracker.spawn(
        state
            .verifier
            .clone()
            .flush_usage_periodically(state.pool.clone(), cancel.clone()),
    );
    tracker.spawn(crate::webhooks::dispatcher(state).run(cancel.clone()));
    // Replays whose server stopped are looked for every twenty polls (5 s by default).
    let replays = Duration::from_millis(state.config.webhooks.poll_interval_ms) * 20;
    tracker.spawn(crate::app::replay_runs::resume_periodically(
        state.clone(),
        replays,
        cancel.clone(),
    ));
    let (limiter, until) = (state.rate_limiter.clone(), cancel.clone());
    tracker.spawn(async move { limiter.watch_shared(until).await });
    tracker.spawn(
        state
            .rate_limiter
            .clone()
            .flush_periodically(state.pool.clone(), cancel.clone()),
    );
    let interval = Duration::from_millis(state.config.jobs.reconcile_interval_ms);
    tracker.spawn(LeaseReconciler::new(state.clone()).run(interval, cancel.clone()));
    if state.audit.is_some() {
        tracker.spawn(herald_projections::usage_count::count_periodically(
            state.pool.clone(),
            Duration::from_secs(1),
            cancel.clone(),
        ));
    }
    let retention_days = state.config.audit.retention_days;
    if state.audit.is_some() && retention_days > 0 {
        let retention = chrono::Duration::days(i64::from(retention_days));
        tracker.spawn(crate::audit::prune_periodically(
            state.pool.clone(),
            state.chain_key.clone(),
            retention,
            cancel.clone(),
        ));
    }
    tracker.spawn(crate::http::idempotency::forget_periodically(
        state.pool.clone(),
        cancel.clone(),
    ));
    let interval = Duration::from_millis(state.config.jobs.expiry_interval_ms);
    tracker.spawn(ExpirySweeper::new(state.clone()).run(interval, cancel.clone()));
}
