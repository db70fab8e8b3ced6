//! Wake-ups: one `LISTEN herald_events` connection per process nudges every local runner when
//! another process announces appended events (`store::announce`; rebuilds announce too). Runners
//! also poll, so a lost notification (for example during a reconnect) only delays them. The
//! process's own announcements (their payload is its origin) are skipped: its coalescer wakes
//! its runners in-process, right after appending and again when it announces.

use std::sync::Arc;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub struct LogWakeups {
    targets: Vec<Arc<Notify>>,
    own_origin: String,
}

impl LogWakeups {
    /// `own_origin`: the payload of this process's own announcements.
    pub fn new(targets: Vec<Arc<Notify>>, own_origin: String) -> Self {
        Self {
            targets,
            own_origin,
        }
    }

    fn wake_all(&self) {
        for target in &self.targets {
            target.notify_one();
        }
    }

    /// Listens until cancelled. Connection errors are logged and retried by the listener.
    pub async fn run(self, pool: PgPool, cancel: CancellationToken) {
        let mut listener = loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => match listener.listen("herald_events").await {
                    Ok(()) => break listener,
                    Err(error) => tracing::warn!(%error, "LISTEN herald_events failed"),
                },
                Err(error) => tracing::warn!(%error, "could not open the LISTEN connection"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notice)) if notice.payload() == self.own_origin => {}
                    Ok(Some(_)) => self.wake_all(),
                    // The connection dropped; the listener reconnects on the next call. Events
                    // may have been appended meanwhile, so wake everyone.
                    Ok(None) => self.wake_all(),
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        }
    }
}
