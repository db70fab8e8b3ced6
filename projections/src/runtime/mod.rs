//! The projection runtime. A `Projection` says how one event changes its read model; a
//! `ProjectionRunner` feeds it the log in commit-safe order, one page per transaction, storing
//! the checkpoint pair in that same transaction, so a crash never loses or repeats an event.

mod checkpoint;
mod runner;
mod wake;

pub use checkpoint::{rebuild, status, ProjectionStatus};
pub use runner::{CatchUp, ProjectionRunner};
pub use wake::LogWakeups;

use async_trait::async_trait;
use herald_store::StoredEvent;
use sqlx::PgConnection;

/// A read model built from the log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the checkpoint key, the advisory-lock key and the CLI argument.
    fn name(&self) -> &'static str;

    /// The aggregate types this projection reads; other events only advance its checkpoint.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// Applies one event inside the page's transaction.
    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> anyhow::Result<()>;

    /// Applies a page of events (already filtered to this projection's aggregate types), in
    /// order, inside the page's transaction. Projections with many events per page override it
    /// to read and write their rows in bulk.
    async fn apply_page(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> anyhow::Result<()> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }

    /// Called after a page that touched this projection has committed (the webhook projector
    /// wakes the dispatcher here, when its deliveries are visible).
    fn committed(&self) {}

    /// Empties the read model, before a rebuild from the start of the log.
    async fn reset(&self, conn: &mut PgConnection) -> anyhow::Result<()>;
}

/// Refuses an event that does not directly follow the row's version: a projection that sees an
/// event twice or misses one stops loudly instead of building a wrong read model.
pub fn check_sequence(
    projection: &str,
    event: &StoredEvent,
    current_version: Option<i64>,
) -> anyhow::Result<()> {
    let expected = current_version.unwrap_or(0) + 1;
    anyhow::ensure!(
        event.sequence == expected,
        "projection {projection}: {} {} has sequence {} but {expected} was expected",
        event.aggregate_type,
        event.aggregate_id,
        event.sequence,
    );
    Ok(())
}
