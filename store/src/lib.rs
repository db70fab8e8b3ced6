//! The event store: how Herald appends to and reads from the `events` table.
//!
//! Writes go through cqrs-es's `PersistedEventStore` in pure event-sourcing mode (no snapshot or
//! aggregate store): `aggregates` loads an aggregate from its events, lets it decide, and commits
//! the new events with optimistic concurrency through `repository` (postgres-es's, with a
//! one-statement path for single events, batched across concurrent commands by `appender`). Reads of the global log (for projections, the
//! webhook projector and history endpoints) live in `log`. `MIGRATOR` embeds the SQL migrations
//! once for the binary and the tests.

pub mod aggregates;
pub mod announce;
mod appender;
pub mod event_batch;
mod in_doubt;
pub mod log;
pub mod metadata;
mod repository;
pub mod search;
pub mod window;

pub use aggregates::{AggregateStore, CommandError, Committed};
pub use announce::{Announcer, Coalescer};
pub use appender::{has_nul_escape, Appender};
pub use event_batch::{EventBatch, EventQueue};
pub use in_doubt::answer_lost;
pub use log::{Position, StoredEvent};
pub use metadata::{Actor, EventMetadata};

/// The forward-only migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
