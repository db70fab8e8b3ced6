//! One runner per projection. It first takes a session-level advisory lock on a dedicated
//! connection, so exactly one process in the whole deployment runs each projection; when that
//! process stops, its connection closes, the lock is released and another replica's runner (which
//! retries the lock on every poll tick) takes over. Holding the lock, it applies pages of the
//! log on that same connection whenever it is woken by `LISTEN/NOTIFY` or by the polling timer.

use std::sync::Arc;
use std::time::Duration;

use herald_store::log::read_page;
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
const BUSY_READ: u64 = 16;

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
            let read = self.catch_up(conn, cancel).await?;
            let gap = if read >= BUSY_READ { BUSY_GAP } else { MIN_GAP };
            tokio::time::sleep(gap).await;
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Applies pages until the log is drained (up to the horizon); returns the events read.
    pub async fn catch_up(
        &self,
        conn: &mut PgConnection,
        cancel: &CancellationToken,
    ) -> anyhow::Result<u64> {
        let mut total = 0;
        while !cancel.is_cancelled() {
            let read = self.step(conn).await?;
            total += read as u64;
            if read == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// One page in one transaction: lock the checkpoint, read after it, apply, advance.
    async fn step(&self, conn: &mut PgConnection) -> anyhow::Result<usize> {
        let mut tx = conn.begin().await?;
        let from = checkpoint::lock(&mut tx, self.name()).await?;
        let wanted = self.projection.aggregate_types();
        let page = read_page(&mut *tx, from, PAGE_SIZE, wanted).await?;
        let Some(last) = page.last else {
            return Ok(0);
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
        Ok(page.read)
    }
}
