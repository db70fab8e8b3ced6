//! The request log's statements and the writer's connection: a batch of records is chained onto
//! the log's last record (`link`) and inserted only if the log does not go past it
//! (`append_at`). When another replica appended meanwhile, the statement inserts nothing (or
//! the primary key refuses it, when that replica's batch is still in flight), and `append`
//! chains the batch again from the stored end.
//!
//! The writer (`batches`) has a connection of its own, opened with the stricter settings
//! `connect` describes: connecting and each statement are limited to 10 s, so a hung database
//! answers calls with 503 instead of holding them, and a commit waits for the local WAL flush
//! even on a cluster that runs `synchronous_commit=off`.

use std::time::Duration;

use super::in_doubt::{self, Backend};
use super::{chain, ChainKey, Record};
use herald_store::answer_lost;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

/// The end of the chain: sequence number and hash of its last record.
pub(super) type Head = (i64, String);

/// The writer's connection, opened with the pool's settings and opened again after an error,
/// and the key its records are chained under.
pub(super) struct Db {
    pool: PgPool,
    conn: Option<PgConnection>,
    /// The backend serving `conn`.
    backend: Option<Backend>,
    /// The backend of a connection given up while a statement's answer was lost.
    orphan: Option<Backend>,
    pub(super) key: ChainKey,
}

/// The longest the writer waits to connect or for one statement: every API response waits
/// for the writer, so a hung database must turn into 503s, not into requests that never end.
const DB_TIMEOUT: Duration = Duration::from_secs(10);

/// `work`, or a timeout error once the database has had `DB_TIMEOUT` and a second more to
/// answer (it ends its own statements at `DB_TIMEOUT`; this covers one that does not answer).
pub(super) async fn within<T>(
    work: impl std::future::Future<Output = sqlx::Result<T>>,
) -> sqlx::Result<T> {
    match tokio::time::timeout(DB_TIMEOUT + Duration::from_secs(1), work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the database did not answer in time",
        ))),
    }
}

/// What the writer's connection adds to the pool's `application_name` (`herald` unless the
/// database URL names one), so `pg_stat_activity` and `bench/pair.sh` can tell its backend
/// from the pool's.
pub const WRITER_NAME: &str = "audit writer";

/// Opens a writer's connection with the pool's settings, named apart (`WRITER_NAME`) and two
/// of them made stricter:
/// - the database ends a statement it cannot finish in `DB_TIMEOUT`, so a batch that timed out
///   is rolled back rather than committed after its callers were told it failed;
/// - a commit waits at least for the local WAL flush even where `synchronous_commit` is `off`
///   (which acknowledges commits a crash of PostgreSQL can still lose), since a response
///   leaves only once its record is durable; stricter settings (`remote_apply`, …) are kept.
///   The value is set for the session whatever it is, so a cluster switched to `off` later
///   (a reload) does not reach this connection; nor does a stricter one (a synchronous
///   standby added), until the writer connects again (after an error, or a restart).
pub async fn connect(pool: &PgPool) -> sqlx::Result<PgConnection> {
    Ok(open(pool).await?.0)
}

/// `connect`, and which backend the connection got.
async fn open(pool: &PgPool) -> sqlx::Result<(PgConnection, Backend)> {
    let timeout = format!("{}ms", DB_TIMEOUT.as_millis());
    let base = pool.connect_options();
    let name = format!(
        "{} {WRITER_NAME}",
        base.get_application_name().unwrap_or("herald")
    );
    let options = (*base)
        .clone()
        .application_name(&name)
        .options([("statement_timeout", timeout.as_str())]);
    let mut conn = within(PgConnection::connect_with(&options)).await?;
    let backend = within(
        sqlx::query_as(
            "SELECT a.pid, a.backend_start \
               FROM set_config('synchronous_commit', \
                      CASE current_setting('synchronous_commit') WHEN 'off' THEN 'local' \
                           ELSE current_setting('synchronous_commit') END, false), \
                    pg_stat_activity a \
              WHERE a.pid = pg_backend_pid()",
        )
        .fetch_one(&mut conn),
    )
    .await?;
    Ok((conn, backend))
}

impl Db {
    pub(super) fn new(pool: PgPool, key: ChainKey) -> Self {
        Self {
            pool,
            conn: None,
            backend: None,
            orphan: None,
            key,
        }
    }

    /// The writer's connection, opened if there is none.
    pub(super) async fn conn(&mut self) -> sqlx::Result<&mut PgConnection> {
        if self.conn.is_none() {
            let (conn, backend) = open(&self.pool).await?;
            self.conn = Some(conn);
            self.backend = Some(backend);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The backend of the connection given up while a statement's answer was lost, if any
    /// (`in_doubt::end_orphan` takes it).
    pub(super) fn take_orphan(&mut self) -> Option<Backend> {
        self.orphan.take()
    }

    /// Forgets the connection after a failed statement (it may be broken). When the statement
    /// may have gone through with its answer lost, its backend is remembered, for
    /// `in_doubt::end_orphan` to end before the logs are read.
    pub(super) fn failed(&mut self, error: &sqlx::Error, what: &str) {
        tracing::error!(%error, "{what}");
        self.conn = None;
        if let Some(backend) = self.backend.take() {
            if answer_lost(error) {
                self.orphan = Some(backend);
            }
        }
    }
}

/// Where the next batch goes: after the last record (or the anchor retention left, or the
/// chain's start), chained onto its hash, but never at or below the usage checkpoint, which
/// only moves forward: when the newest records were deleted by hand, the next batch leaves
/// their positions empty, so verification reports them missing instead of their positions
/// being reused.
pub(super) async fn stored_head(db: &mut Db) -> sqlx::Result<Head> {
    let conn = db.conn().await?;
    within(
        sqlx::query_as(
            "SELECT greatest(h.seq, (SELECT seq FROM usage_checkpoint)), h.hash \
               FROM ((SELECT seq, hash FROM request_log ORDER BY seq DESC LIMIT 1) \
                     UNION ALL (SELECT seq, hash FROM request_log_anchor) \
                     UNION ALL (SELECT 0, repeat('0', 64)) ORDER BY seq DESC LIMIT 1) h",
        )
        .fetch_one(conn),
    )
    .await
}

/// Numbers and chains `records` after `start` under `key`, in `CHAIN_FORMAT` (which
/// `insert_sql` writes); returns the new end of the chain.
pub(super) fn link(key: &ChainKey, records: &mut [Record], start: &Head) -> Head {
    let (mut seq, mut prev) = start.clone();
    for record in records.iter_mut() {
        seq += 1;
        record.seq = seq;
        record.chain_format = chain::CHAIN_FORMAT;
        record.hash = chain::hash(key, &prev, record);
        prev = record.hash.clone();
    }
    (seq, prev)
}

/// Chains `records` onto the end this writer remembers (without one, the stored end) and
/// appends them; while other replicas keep moving the end, chains them again from the stored
/// one (up to a hundred times). On success `head` is the new end.
pub(super) async fn append(db: &mut Db, records: &mut [Record], head: &mut Option<Head>) -> bool {
    let mut remembered = head.take();
    for _ in 0..100 {
        let start = match remembered.take() {
            Some(start) => start,
            None => match stored_head(db).await {
                Ok(start) => start,
                Err(error) => {
                    db.failed(&error, "could not read the request log's head");
                    return false;
                }
            },
        };
        let end = link(&db.key, records, &start);
        match append_at(db, &start, records).await {
            Ok(true) => {
                *head = Some(end);
                return true;
            }
            // Another replica moved the end: chain again from the stored one.
            Ok(false) => continue,
            Err(error) => {
                db.failed(&error, "could not write the request log");
                // The answer was lost, not the records, perhaps: then they are the new end.
                if answer_lost(&error)
                    && in_doubt::end_orphan(db).await
                    && in_doubt::records_stored(db, records).await
                {
                    *head = Some(end);
                    return true;
                }
                return false;
            }
        }
    }
    tracing::error!("the request log's head kept moving");
    false
}

/// One statement: inserts the records (chained onto `start`) unless the log already goes past
/// `start`; false, with nothing inserted, when it does, or when another replica's batch took
/// the same positions first (the primary key refuses the second). ("Past", not "elsewhere":
/// a log whose newest records were deleted by hand is appended after the gap.)
async fn append_at(db: &mut Db, start: &Head, records: &[Record]) -> sqlx::Result<bool> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_sql(1));
    let conn = db.conn().await?;
    let statement = bind(sqlx::query(&SQL), start, records).execute(conn);
    match within(statement).await {
        Ok(done) => Ok(done.rows_affected() == records.len() as u64),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Ok(false),
        Err(error) => Err(error),
    }
}

/// The records' `INSERT` with its guard, its parameters numbered from `$first` (the start's
/// sequence number) on, as `bind` binds them. One fixed statement (prepared once, whatever the
/// batch size), one array per column, unnested in the select list, in lock-step and a value at
/// a time: in `FROM unnest(a, b, …)` each array would fill a tuplestore of its own
/// (docs/PERFORMANCE.md).
pub(super) fn insert_sql(first: usize) -> String {
    const COLUMNS: [&str; 18] = [
        "bigint",
        "timestamptz",
        "text",
        "text",
        "text",
        "uuid",
        "text",
        "text",
        "text",
        "int",
        "bigint",
        "bigint",
        "bigint",
        "text",
        "text",
        "text",
        "text",
        "text",
    ];
    let values: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("unnest(${}::{ty}[])", first + 1 + i))
        .collect();
    format!(
        "INSERT INTO request_log (seq, occurred_at, request_id, actor_type, actor_id, project_id, \
           route, method, path, status, latency_us, request_bytes, response_bytes, client_ip, \
           user_agent, outcome, error_code, hash, chain_format) \
         SELECT {}, {} \
          WHERE coalesce((SELECT max(seq) FROM request_log), (SELECT seq FROM request_log_anchor), 0) <= ${first} \
            AND (SELECT seq FROM usage_checkpoint) <= ${first}",
        values.join(", "),
        chain::CHAIN_FORMAT
    )
}

/// Binds the start's sequence number and then one array per column, in `insert_sql`'s order.
pub(super) fn bind<'q>(
    query: Query<'q, Postgres, PgArguments>,
    start: &Head,
    records: &'q [Record],
) -> Query<'q, Postgres, PgArguments> {
    let col = |f: fn(&Record) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
    query
        .bind(start.0)
        .bind(records.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(col(|r| Some(&r.request_id)))
        .bind(col(|r| r.actor_type.as_deref()))
        .bind(col(|r| r.actor_id.as_deref()))
        .bind(records.iter().map(|r| r.project_id).collect::<Vec<_>>())
        .bind(col(|r| Some(&r.route)))
        .bind(col(|r| Some(&r.method)))
        .bind(col(|r| Some(&r.path)))
        .bind(records.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.latency_us).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.request_bytes).collect::<Vec<_>>())
        .bind(records.iter().map(|r| r.response_bytes).collect::<Vec<_>>())
        .bind(col(|r| r.client_ip.as_deref()))
        .bind(col(|r| r.user_agent.as_deref()))
        .bind(col(|r| Some(&r.outcome)))
        .bind(col(|r| r.error_code.as_deref()))
        .bind(col(|r| Some(&r.hash)))
}
