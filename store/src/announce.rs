//! Telling readers that the log grew. Projection runners in every replica `LISTEN herald_events`;
//! whoever appends announces it. A `NOTIFY` inside the appending transaction would serialise
//! every commit on PostgreSQL's notification queue (measured: about a fifth of submission
//! throughput), so the server announces from outside the transaction and coalesces: however many
//! commits happen within a couple of milliseconds, one `NOTIFY` goes out. One-off processes (the
//! CLI) announce each commit directly. Runners also poll, so a lost announcement only delays.
//! The server's announcements carry its origin, so its own listener can skip them: its runners
//! were already woken in-process (and a runner whose first look finds its events held back by
//! an older open transaction keeps looking by itself; see `projections::runtime::runner`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "herald_events";
/// However many commits happen within this time, one `NOTIFY` goes out. Only other replicas wait
/// for it (local runners are woken at once), and under load they catch up every 20 ms anyway.
const COALESCE: Duration = Duration::from_millis(10);

/// How an `AggregateStore` announces its commits.
#[derive(Clone)]
pub enum Announcer {
    /// `NOTIFY` right after each commit (one round trip; for short-lived processes).
    Direct(PgPool),
    /// Hand the announcement to a coalescing task (the server).
    Coalesced(Arc<Coalescer>),
}

impl Announcer {
    pub async fn appended(&self) {
        match self {
            Announcer::Direct(pool) => {
                if let Err(error) = notify(pool, "").await {
                    tracing::warn!(%error, "could not announce appended events");
                }
            }
            Announcer::Coalesced(coalescer) => coalescer.appended(),
        }
    }
}

async fn notify(pool: &PgPool, origin: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(origin)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Collects "events were appended" signals and sends one `NOTIFY` per burst. Local listeners
/// (this process's runners) are woken at once, without a round trip.
pub struct Coalescer {
    /// The payload of this process's notifications (see `origin`).
    origin: String,
    pending: AtomicBool,
    signal: Notify,
    local: Vec<Arc<Notify>>,
}

impl Coalescer {
    pub fn new(local: Vec<Arc<Notify>>) -> Self {
        Self {
            origin: format!("origin:{}", uuid::Uuid::new_v4().simple()),
            pending: AtomicBool::new(false),
            signal: Notify::new(),
            local,
        }
    }

    /// What this process's notifications carry, for its listener to recognise its own echo.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn appended(&self) {
        for runner in &self.local {
            runner.notify_one();
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.signal.notify_one();
        }
    }

    /// Sends the coalesced notifications until cancelled.
    pub async fn run(self: Arc<Self>, pool: PgPool, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.signal.notified() => {}
            }
            tokio::time::sleep(COALESCE).await;
            if self.pending.swap(false, Ordering::AcqRel) {
                if let Err(error) = notify(&pool, &self.origin).await {
                    tracing::warn!(%error, "could not announce appended events");
                }
            }
        }
    }
}
