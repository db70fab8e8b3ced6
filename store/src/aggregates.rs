//! Running commands against aggregates stored as events.
//!
//! `execute` loads the aggregate from its events, lets it decide, and commits the resulting
//! events in one transaction; the primary key `(aggregate_type, aggregate_id, sequence)` makes a
//! concurrent writer fail with a conflict instead of forking the history. Conflicts are retried
//! (with a fresh load) when the caller says the command is safe to retry.

use std::time::Duration;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use sqlx::PgPool;

use crate::repository::EventRepository;
use crate::{Announcer, Appender, EventMetadata};

/// Conflicts are retried this many times; with 20 writers on one aggregate, a writer can lose
/// many rounds in a row, so the budget is generous and the backoff jittered (so losers do not
/// collide again in lockstep).
const MAX_CONFLICT_RETRIES: u32 = 30;
const MAX_BACKOFF_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The aggregate refused the command (a business rule).
    #[error("command refused")]
    Rejected(#[source] E),
    /// Another writer changed the aggregate first and the command was not safe to retry (or
    /// kept losing the race).
    #[error("the resource was changed concurrently")]
    Conflict,
    /// The database failed or an event did not deserialize.
    #[error("event store failure")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The outcome of a committed command.
#[derive(Debug, Clone)]
pub struct Committed<A> {
    /// The aggregate after the new events.
    pub aggregate: A,
    /// The aggregate's last sequence number after the command.
    pub sequence: usize,
    /// How many events the command appended (zero is a valid outcome).
    pub appended: usize,
}

/// The event store for one aggregate type.
pub struct AggregateStore<A: Aggregate> {
    store: PersistedEventStore<EventRepository, A>,
    announcer: Announcer,
}

impl<A> AggregateStore<A>
where
    A: Aggregate<Services = ()> + Clone,
    A::Command: Clone,
    A::Error: 'static,
{
    /// A store that announces each commit with its own `NOTIFY` (for short-lived processes).
    pub fn new(pool: PgPool) -> Self {
        Self::with_parts(pool.clone(), Announcer::Direct(pool), None)
    }

    /// A store that announces through `announcer` and, given an `appender`, writes single-event
    /// commits together with other stores' (the server).
    pub fn with_parts(pool: PgPool, announcer: Announcer, appender: Option<Appender>) -> Self {
        let repo = EventRepository::new(pool, appender);
        Self {
            store: PersistedEventStore::new_event_store(repo),
            announcer,
        }
    }

    /// The aggregate folded from all its events, with its last sequence (0: no events).
    pub async fn load(&self, id: &str) -> Result<(A, usize), CommandError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(store_error)?;
        Ok((context.aggregate, context.current_sequence))
    }

    /// Runs `command` against aggregate `id` and commits what it decides.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        retry_on_conflict: bool,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        self.execute_guarded(id, command, metadata, retry_on_conflict, |_| Ok(()))
            .await
    }

    /// Runs `command` against an aggregate that cannot exist yet (its id was just generated), so
    /// there is nothing to load: one round trip fewer than `execute`. Should the id exist after
    /// all, the primary key refuses the append and this answers `Conflict`.
    pub async fn create(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let context = EventStoreAggregateContext {
            aggregate_id: id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        self.decide_and_commit(context, command, metadata, &|_| Ok(()))
            .await
    }

    /// Like `execute`, but `guard` sees the loaded aggregate first and may refuse the command
    /// (used for tenancy: a caller from another project must not learn the resource exists).
    pub async fn execute_guarded(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        retry_on_conflict: bool,
        guard: impl Fn(&A) -> Result<(), A::Error>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let mut attempt = 0;
        loop {
            match self
                .try_execute(id, command.clone(), metadata, &guard)
                .await
            {
                Err(CommandError::Conflict)
                    if retry_on_conflict && attempt < MAX_CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(
                        aggregate.id = id,
                        attempt,
                        "retrying after a write conflict"
                    );
                    let ceiling = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
                    let backoff = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling);
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn try_execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        guard: &impl Fn(&A) -> Result<(), A::Error>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        let context: EventStoreAggregateContext<A> =
            self.store.load_aggregate(id).await.map_err(store_error)?;
        self.decide_and_commit(context, command, metadata, guard)
            .await
    }

    async fn decide_and_commit(
        &self,
        mut context: EventStoreAggregateContext<A>,
        command: A::Command,
        metadata: &EventMetadata,
        guard: &impl Fn(&A) -> Result<(), A::Error>,
    ) -> Result<Committed<A>, CommandError<A::Error>> {
        guard(&context.aggregate).map_err(CommandError::Rejected)?;
        let sink = Default::default();
        context
            .aggregate
            .handle(command, &(), &sink)
            .await
            .map_err(CommandError::Rejected)?;
        let events = sink.collect().await;
        let appended = events.len();
        // `handle` already applied the events to the aggregate through the sink.
        let aggregate = context.aggregate.clone();
        let sequence = context.current_sequence + appended;
        if appended > 0 {
            self.store
                .commit(events, context, metadata.to_map())
                .await
                .map_err(store_error)?;
            self.announcer.appended().await;
        }
        Ok(Committed {
            aggregate,
            sequence,
            appended,
        })
    }
}

fn store_error<E: std::error::Error + 'static>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::DatabaseConnectionError(e)
        | AggregateError::DeserializationError(e)
        | AggregateError::UnexpectedError(e) => CommandError::Store(e),
    }
}
