//! One runner per projection. It first takes a session-level advisory lock on a dedicated
//! connection, so exactly one process in the whole deployment runs each projection; when that
//! process stops, its connection closes, the lock is released and another replica's runner (which
//! retries the lock on every poll tick) takes over. Holding the lock, it applies pages of the
//! log on that same connection whenever it is woken by `LISTEN/NOTIFY` or by the polling timer.

use std::sync::Arc;
use std::time::Duration;

use herald_store::log::{held_back, read_page};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{checkpoint, Projection};

/// First key of the two-key advisory lock; the second is `hashtext(projection name)`.
const LOCK_CLASS: i32 = 0x4845_5241; // "HERA"
const PAGE_SIZE: i64 = 500;
/// The shortest pause between two catch-ups. Under a steady stream of appends this turns one
/// page per event into one page per few milliseconds of events; when the log is quiet the next
/// wake-up is handled at once.
const MIN_GAP: Duration = Duration::from_millis(5);
/// The pause after a catch-up that read at least `BUSY_READ` events (thousands of events a
/// second): fewer, larger pages, each costing a handful of round trips and a transaction,
/// leave more of the machine to the requests; lists and webhooks lag by at most this much more.
const BUSY_GAP: Duration = Duration::from_millis(20);
/// The pause after a busy catch-up in which none of the events were this projection's (the
/// projects projection while jobs pour in): its pages only move its checkpoint, so it takes
/// them less often. Its own next event waits at most this long.
const QUIET_GAP: Duration = Duration::from_millis(100);
const BUSY_READ: usize = 16;

/// What one catch-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// Events read.
    pub read: usize,
    /// Events of this projection's aggregate types among them (applied).
    pub applied: usize,
    /// Whether committed events were left behind the horizon (an older transaction was still
    /// open): look again after the pause instead of waiting to be woken.
    pub held_back: bool,
}

impl CatchUp {
    /// How long to pause before the next catch-up.
    fn pause(self) -> Duration {
        match self {
            // Looking again for events an open transaction holds back: not too eagerly, since
            // a long transaction (someone's psql session) can hold them for minutes.
            CatchUp {
                read: 0,
                held_back: true,
                ..
            } => BUSY_GAP,
            CatchUp { read, .. } if read < BUSY_READ => MIN_GAP,
            CatchUp { applied: 0, .. } => QUIET_GAP,
            _ => BUSY_GAP,
        }
    }
}

pub struct ProjectionRunner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    wake: Arc<Notify>,
    poll_interval: Duration,
}

impl ProjectionRunner {
    pub fn new(
        pool: PgPool,
        projection: Arc<dyn Projection>,
        wake: Arc<Notify>,
        poll_interval: Duration,
    ) -> Self {
        Self {
            pool,
            projection,
            wake,
            poll_interval,
        }
    }

    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// Runs until `cancel` fires: waits for the lock, then keeps the read model current. A page
    /// in progress is finished (its transaction commits or rolls back) before returning.
    pub async fn run(self, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let Some(mut conn) = self.wait_for_lock(&cancel).await else {
                return;
            };
            tracing::info!(projection = self.name(), "projection runner holds the lock");
            if let Err(error) = self.follow(&mut conn, &cancel).await {
                tracing::error!(
                    projection = self.name(),
                    error = format!("{error:#}"),
                    "projection runner failed; retrying"
                );
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
            }
        }
    }

    async fn wait_for_lock(&self, cancel: &CancellationToken) -> Option<PgConnection> {
        loop {
            match self.try_lock().await {
                Ok(Some(conn)) => return Some(conn),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(projection = self.name(), %error, "could not try the projection lock")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// A dedicated connection holding this projection's lock, or `None` if another process has it.
    pub async fn try_lock(&self) -> sqlx::Result<Option<PgConnection>> {
        let mut conn = self.pool.acquire().await?.detach();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LOCK_CLASS)
            .bind(self.name())
            .fetch_one(&mut conn)
            .await?;
        if !locked {
            return Ok(None);
        }
        checkpoint::ensure(&mut conn, self.name()).await?;
        Ok(Some(conn))
    }

    async fn follow(
        &self,
        conn: &mut PgConnection,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let caught = self.catch_up(conn, cancel).await?;
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(caught.pause()) => {}
            }
            if caught.held_back {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Applies pages until the log is drained (up to the horizon).
    pub async fn catch_up(
        &self,
        conn: &mut PgConnection,
        cancel: &CancellationToken,
    ) -> anyhow::Result<CatchUp> {
        let mut total = CatchUp::default();
        while !cancel.is_cancelled() {
            let page = self.step(conn).await?;
            total.read += page.read;
            total.applied += page.applied;
            if page.read == 0 {
                total.held_back = page.held_back;
                break;
            }
        }
        Ok(total)
    }

    /// One page in one transaction: lock the checkpoint, read after it, apply, advance.
    async fn step(&self, conn: &mut PgConnection) -> anyhow::Result<CatchUp> {
        let mut tx = conn.begin().await?;
        let from = checkpoint::lock(&mut tx, self.name()).await?;
        let wanted = self.projection.aggregate_types();
        let page = read_page(&mut *tx, from, PAGE_SIZE, wanted).await?;
        let Some(last) = page.last else {
            return Ok(CatchUp {
                held_back: held_back(&mut *tx, from).await?,
                ..CatchUp::default()
            });
        };
        let relevant: Vec<_> = page.wanted.iter().collect();
        if !relevant.is_empty() {
            self.projection.apply_page(&mut tx, &relevant).await?;
        }
        checkpoint::advance(&mut tx, self.name(), last, page.read as i64).await?;
        tx.commit().await?;
        if !relevant.is_empty() {
            self.projection.committed();
        }
        Ok(CatchUp {
            read: page.read,
            applied: relevant.len(),
            held_back: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_with_load_and_longest_for_pages_of_other_types() {
        let after = |read, applied| {
            CatchUp {
                read,
                applied,
                held_back: false,
            }
            .pause()
        };
        assert_eq!(after(0, 0), MIN_GAP);
        assert_eq!(after(BUSY_READ - 1, BUSY_READ - 1), MIN_GAP);
        assert_eq!(after(BUSY_READ, 1), BUSY_GAP);
        assert_eq!(after(500, 0), QUIET_GAP);
        let held = CatchUp {
            held_back: true,
            ..CatchUp::default()
        };
        assert_eq!(held.pause(), BUSY_GAP);
    }
}
