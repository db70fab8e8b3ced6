//! The event repository behind every aggregate store: postgres-es's `PostgresEventRepository`,
//! except that a commit of exactly one event (most commands) is one autocommitted `INSERT`
//! instead of `BEGIN`, `INSERT`, `COMMIT`. A single statement is atomic on its own, the row is
//! the one postgres-es would write, and a duplicate sequence number is the same optimistic-
//! concurrency conflict; two fewer round trips per command. In the server that single event goes
//! to the `Appender`, which writes concurrent ones together. Everything else (loads, commits of
//! several events) is postgres-es's own code.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use crate::Appender;

pub struct EventRepository {
    inner: PostgresEventRepository,
    pool: PgPool,
    appender: Option<Appender>,
}

impl EventRepository {
    pub fn new(pool: PgPool, appender: Option<Appender>) -> Self {
        Self {
            inner: PostgresEventRepository::new(pool.clone()),
            pool,
            appender,
        }
    }

    async fn insert_one<A: Aggregate>(
        &self,
        event: &SerializedEvent,
    ) -> Result<(), PersistenceError> {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(A::TYPE)
        .bind(&event.aggregate_id)
        .bind(event.sequence as i64)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(&event.payload)
        .bind(&event.metadata)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(persistence_error)
    }
}

/// The mapping postgres-es applies to its own errors.
fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Database(_) => PersistenceError::UnknownError(Box::new(error)),
        _ => PersistenceError::ConnectionError(Box::new(error)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match (events, &snapshot_update) {
            ([event], None) => match &self.appender {
                Some(appender) => appender.append(A::TYPE, event).await,
                None => self.insert_one::<A>(event).await,
            },
            _ => self.inner.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
