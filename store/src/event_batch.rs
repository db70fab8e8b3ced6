//! A batch of single-event appends and the one statement that writes it. The `Appender`'s
//! handles queue appends into an `EventQueue`; whoever owns the queue takes batches from it and
//! writes each as one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`: the appender's own
//! task (`Appender::start`), or the request log's writer, which puts the batch's `INSERT` in
//! the same statement as its records so that both logs share one commit
//! (`Appender::detached`). A row the primary key refuses (another writer took that sequence
//! number first) comes back missing: that command's optimistic-concurrency conflict, exactly as
//! a lone insert would have reported it.

use std::collections::HashSet;

use cqrs_es::persist::{PersistenceError, SerializedEvent};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// At most this many appends go into one statement.
const MAX_BATCH: usize = 256;

/// One waiting append and where its outcome goes.
pub(crate) struct Pending {
    pub(crate) aggregate_type: &'static str,
    pub(crate) event: SerializedEvent,
    /// The payload and metadata as JSON text, which PostgreSQL only validates on its way into
    /// the `json` columns (sent as `jsonb`, each document was parsed and printed back out).
    pub(crate) payload: String,
    pub(crate) metadata: String,
    /// The event's project when the event itself names it (`project_of`); otherwise the
    /// database finds it from the aggregate's first event (migration 0020).
    pub(crate) project_id: Option<Uuid>,
    pub(crate) done: oneshot::Sender<Result<(), PersistenceError>>,
}

/// The receiving end of the appends: dropping it fails every append still waiting.
pub struct EventQueue {
    pub(crate) receiver: mpsc::UnboundedReceiver<Pending>,
}

impl EventQueue {
    /// Waits for an append and takes it with whatever else is queued (up to a batch's size);
    /// `None` once every `Appender` handle is gone and the queue is empty. With `gather`, yields
    /// to the scheduler once after the first append arrives, so requests already running can
    /// reach their appends and join the batch (no timer).
    pub async fn next_batch(&mut self, gather: bool) -> Option<EventBatch> {
        let mut batch = self.wait().await?;
        if gather {
            tokio::task::yield_now().await;
        }
        self.top_up(&mut batch);
        Some(batch)
    }

    /// Waits for the next append and returns it as a batch of one, for `top_up` to fill;
    /// `None` once every `Appender` handle is gone and the queue is empty. Cancel-safe: nothing
    /// is taken from the queue unless this returns.
    pub async fn wait(&mut self) -> Option<EventBatch> {
        Some(EventBatch(vec![self.receiver.recv().await?]))
    }

    /// What is queued right now (up to a batch's size), without waiting; `None` when nothing is.
    pub fn try_batch(&mut self) -> Option<EventBatch> {
        let mut batch = EventBatch(vec![self.receiver.try_recv().ok()?]);
        self.top_up(&mut batch);
        Some(batch)
    }

    /// Adds to `batch` what is queued right now, up to a batch's size.
    pub fn top_up(&mut self, batch: &mut EventBatch) {
        while batch.0.len() < MAX_BATCH {
            match self.receiver.try_recv() {
                Ok(pending) => batch.0.push(pending),
                Err(_) => break,
            }
        }
    }
}

/// Appends taken from the queue together; every one of them is answered by `settle` or
/// `fail`, or fails as dropped when the batch is.
pub struct EventBatch(pub(crate) Vec<Pending>);

/// An inserted row: aggregate type, aggregate id and sequence number.
pub type EventKey = (String, String, i64);

impl EventBatch {
    /// The batch's `INSERT`, bound to `$1` … `$8` by `bind`, returning the key of each row it
    /// inserted. Usable alone or as a data-modifying `WITH` query of a larger statement.
    pub const INSERT: &'static str =
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
                             payload, metadata, project_id) \
         SELECT unnest($1::text[]), unnest($2::text[]), unnest($3::bigint[]), unnest($4::text[]), \
                unnest($5::text[]), unnest($6::text[]::json[]), unnest($7::text[]::json[]), \
                unnest($8::uuid[]) \
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING \
         RETURNING aggregate_type, aggregate_id, sequence";

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Puts the appends in key order, so two replicas' batches that share keys take their
    /// locks in the same order instead of deadlocking; the sort is stable, so of two appends of
    /// one key the first still comes first.
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (a.aggregate_type, &a.event.aggregate_id, a.event.sequence).cmp(&(
                b.aggregate_type,
                &b.event.aggregate_id,
                b.event.sequence,
            ))
        });
    }

    /// Binds the batch's columns as `$1` … `$8` of `query` (which binds nothing before them).
    /// The arrays are unnested in the select list, not `FROM unnest(…)`: no tuplestore each.
    pub fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        let text = |f: fn(&'q Pending) -> &'q str| self.0.iter().map(f).collect::<Vec<_>>();
        query
            .bind(text(|p| p.aggregate_type))
            .bind(text(|p| &p.event.aggregate_id))
            .bind(
                self.0
                    .iter()
                    .map(|p| p.event.sequence as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(text(|p| &p.event.event_type))
            .bind(text(|p| &p.event.event_version))
            .bind(text(|p| &p.payload))
            .bind(text(|p| &p.metadata))
            .bind(self.0.iter().map(|p| p.project_id).collect::<Vec<_>>())
    }

    /// The batch's statement alone: the keys of the rows it inserted. Answers nobody, so a
    /// caller whose statement's answer was lost can still `rewrite` the batch.
    pub async fn insert<'c>(
        &self,
        executor: impl sqlx::PgExecutor<'c>,
    ) -> sqlx::Result<Vec<EventKey>> {
        let rows = self
            .bind(sqlx::query(Self::INSERT))
            .fetch_all(executor)
            .await?;
        rows.iter().map(sqlx::FromRow::from_row).collect()
    }

    /// Answers every append from the keys of the rows that were inserted: an append whose row
    /// is not among them lost its sequence number to another writer.
    pub fn settle(self, inserted: Vec<EventKey>) {
        let mut inserted: HashSet<EventKey> = inserted.into_iter().collect();
        for pending in self.0 {
            let key = (
                pending.aggregate_type.to_owned(),
                pending.event.aggregate_id.clone(),
                pending.event.sequence as i64,
            );
            // Two appends of the same sequence in one batch: the first row is the one
            // PostgreSQL inserted, so the first waiter claims it and the second conflicts.
            let result = if inserted.remove(&key) {
                Ok(())
            } else {
                Err(PersistenceError::OptimisticLockError)
            };
            let _ = pending.done.send(result);
        }
    }

    /// Answers the appends whose rows are among `inserted` as done and fails the others with
    /// `error` (whether their rows went in could not be told).
    pub fn settle_partly(self, inserted: Vec<EventKey>, error: &sqlx::Error) {
        let inserted: HashSet<EventKey> = inserted.into_iter().collect();
        let (done, failed): (Vec<Pending>, Vec<Pending>) = self.0.into_iter().partition(|p| {
            inserted.contains(&(
                p.aggregate_type.to_owned(),
                p.event.aggregate_id.clone(),
                p.event.sequence as i64,
            ))
        });
        EventBatch(done).settle(inserted.into_iter().collect());
        EventBatch(failed).fail(error);
    }

    /// Fails every append with `error` (the statement did not commit).
    pub fn fail(self, error: &sqlx::Error) {
        let message = error.to_string();
        for pending in self.0 {
            let failure = match error {
                sqlx::Error::Database(_) => PersistenceError::UnknownError(message.clone().into()),
                _ => PersistenceError::ConnectionError(message.clone().into()),
            };
            let _ = pending.done.send(Err(failure));
        }
    }
}

/// The project an event names itself: a project's own events belong to it, an aggregate's
/// first event carries its project in the payload (`project_id`), and so does each of a user's
/// project-role events (migration 0024). `None` for the rest (later events, a user's other
/// events, account-wide keys and endpoints), which the database then works out as migrations
/// 0020 and 0024 describe; this only spares the common appends its trigger, so it accepts only
/// the hyphenated form, as the trigger does.
pub(crate) fn project_of(aggregate_type: &str, event: &SerializedEvent) -> Option<Uuid> {
    let id = if aggregate_type == "project" {
        event.aggregate_id.as_str()
    } else if event.sequence == 1 || (aggregate_type == "user" && is_role_event(event)) {
        event.payload.get("project_id")?.as_str()?
    } else {
        return None;
    };
    (id.len() == 36).then(|| Uuid::parse_str(id).ok()).flatten()
}

/// A user's role in a project given or taken (the user events that belong to that project).
fn is_role_event(event: &SerializedEvent) -> bool {
    matches!(
        event.event_type.as_str(),
        "user.project_role_granted" | "user.project_role_revoked"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, sequence: usize, payload: serde_json::Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: id.to_owned(),
            sequence,
            aggregate_type: String::new(),
            event_type: "test".to_owned(),
            event_version: "1".to_owned(),
            payload,
            metadata: json!({}),
        }
    }

    #[test]
    fn an_event_names_its_project_only_as_a_projects_or_an_aggregates_first() {
        let project = Uuid::new_v4();
        let first = event(
            "job-1",
            1,
            json!({"type": "JobSubmitted", "project_id": project}),
        );
        assert_eq!(project_of("job", &first), Some(project));
        // A later event's payload does not decide: the first event's project does.
        let later = event("job-1", 2, json!({"project_id": Uuid::new_v4()}));
        assert_eq!(project_of("job", &later), None);
        let own = event(&project.to_string(), 3, json!({}));
        assert_eq!(project_of("project", &own), Some(project));
        let odd = event("job-2", 1, json!({"project_id": "not-a-uuid"}));
        assert_eq!(project_of("job", &odd), None);
        let simple = event(
            "job-3",
            1,
            json!({"project_id": project.simple().to_string()}),
        );
        assert_eq!(project_of("job", &simple), None);
        assert_eq!(project_of("user", &event("u-1", 1, json!({}))), None);
        // A user's role event names the project the role is in; no other user event does.
        let mut granted = event("u-1", 4, json!({"project_id": project}));
        granted.event_type = "user.project_role_granted".to_owned();
        assert_eq!(project_of("user", &granted), Some(project));
        granted.event_type = "user.logged_in".to_owned();
        assert_eq!(project_of("user", &granted), None);
    }
}
