//! The file catalogue (`files`, `upload_chunks`): resumable uploads and their chunks, finished
//! files, which job holds a file and when its bytes go. `janitor` removes bytes that are due;
//! `intake` stores a file sent whole in a multipart request. The bytes themselves are in
//! `crate::storage`; the job's events record the `FileRef`s it uses.

pub mod intake;
pub mod janitor;

use chrono::{DateTime, Utc};
use herald_domain::FileRef;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One row of the catalogue.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub state: String,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub chunk_size: Option<i64>,
    pub chunk_count: Option<i32>,
    pub expected_sha256: Option<String>,
    pub sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub job_id: Option<Uuid>,
}

impl FileRow {
    pub fn file_ref(&self) -> FileRef {
        FileRef {
            id: self.id,
            filename: self.filename.clone(),
            content_type: self.content_type.clone(),
            size: self.size as u64,
            sha256: self.sha256.clone().unwrap_or_default(),
        }
    }

    /// The size chunk `n` must have (the last one takes the remainder).
    pub fn chunk_len(&self, n: u32) -> Option<u64> {
        let (size, chunk, count) = (
            self.size as u64,
            self.chunk_size? as u64,
            self.chunk_count? as u32,
        );
        if n >= count {
            return None;
        }
        Some(if n + 1 == count {
            size - chunk * u64::from(count - 1)
        } else {
            chunk
        })
    }
}

const COLUMNS: &str = "id, project_id, state, filename, content_type, size, chunk_size, \
    chunk_count, expected_sha256, sha256, created_at, completed_at, expires_at, job_id";

/// What a new resumable upload declares.
pub struct NewUpload<'a> {
    pub project_id: Uuid,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size: u64,
    pub chunk_size: u64,
    pub expected_sha256: Option<&'a str>,
    pub created_by: &'a str,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_upload(pool: &PgPool, new: &NewUpload<'_>) -> sqlx::Result<FileRow> {
    let chunk_count = new.size.div_ceil(new.chunk_size).max(1);
    sqlx::query_as(&format!(
        "INSERT INTO files (id, project_id, state, filename, content_type, size, chunk_size, \
                            chunk_count, expected_sha256, created_by, expires_at) \
         VALUES ($1, $2, 'uploading', $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.project_id)
    .bind(new.filename)
    .bind(new.content_type)
    .bind(new.size as i64)
    .bind(new.chunk_size as i64)
    .bind(chunk_count as i32)
    .bind(new.expected_sha256)
    .bind(new.created_by)
    .bind(new.expires_at)
    .fetch_one(pool)
    .await
}

/// Records a file stored whole (a multipart part), not yet held by a job.
pub async fn create_complete(
    pool: &PgPool,
    id: Uuid,
    project_id: Uuid,
    file: &FileRef,
    created_by: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO files (id, project_id, state, filename, content_type, size, sha256, \
                            created_by, completed_at, expires_at) \
         VALUES ($1, $2, 'complete', $3, $4, $5, $6, $7, now(), $8)",
    )
    .bind(id)
    .bind(project_id)
    .bind(&file.filename)
    .bind(&file.content_type)
    .bind(file.size as i64)
    .bind(&file.sha256)
    .bind(created_by)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<FileRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM files WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// The chunk numbers received so far, ascending.
pub async fn received_chunks(pool: &PgPool, upload: Uuid) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar("SELECT n FROM upload_chunks WHERE upload_id = $1 ORDER BY n")
        .bind(upload)
        .fetch_all(pool)
        .await
}

/// What keeping a chunk did.
pub enum Kept {
    /// Recorded; the object of the copy it replaced, if any, is no longer wanted.
    Replaced(Option<String>),
    /// The upload no longer takes chunks.
    Closed,
}

/// Keeps a received chunk, replacing an earlier copy of it. The upload's row is locked for the
/// moment, so a chunk cannot slip in while `complete` starts or the janitor expires the upload,
/// and two copies of one chunk arriving together each see the other's key.
pub async fn record_chunk(
    pool: &PgPool,
    upload: Uuid,
    n: u32,
    size: u64,
    sha256: &str,
    object_key: &str,
) -> sqlx::Result<Kept> {
    let mut tx = pool.begin().await?;
    let open: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM files WHERE id = $1 AND state = 'uploading' FOR UPDATE")
            .bind(upload)
            .fetch_optional(&mut *tx)
            .await?;
    if open.is_none() {
        return Ok(Kept::Closed);
    }
    let previous: Option<String> =
        sqlx::query_scalar("SELECT object_key FROM upload_chunks WHERE upload_id = $1 AND n = $2")
            .bind(upload)
            .bind(n as i32)
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO upload_chunks (upload_id, n, size, sha256, object_key) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (upload_id, n) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, \
             object_key = excluded.object_key, received_at = now()",
    )
    .bind(upload)
    .bind(n as i32)
    .bind(size as i64)
    .bind(sha256)
    .bind(object_key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Kept::Replaced(previous))
}

/// The object keys of an upload's chunks, in order.
pub async fn chunk_keys(pool: &PgPool, upload: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT object_key FROM upload_chunks WHERE upload_id = $1 ORDER BY n")
        .bind(upload)
        .fetch_all(pool)
        .await
}

/// Moves an upload from `from` to `to` state; false when it was not in `from`.
pub async fn transition(pool: &PgPool, id: Uuid, from: &str, to: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE files SET state = $3 WHERE id = $1 AND state = $2")
        .bind(id)
        .bind(from)
        .bind(to)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks an assembled upload complete with the hash of its bytes; `None` when it is no longer
/// being assembled (the janitor expired it meanwhile).
pub async fn complete_upload(
    pool: &PgPool,
    id: Uuid,
    sha256: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<Option<FileRow>> {
    sqlx::query_as(&format!(
        "UPDATE files SET state = 'complete', sha256 = $2, completed_at = now(), expires_at = $3 \
         WHERE id = $1 AND state = 'assembling' RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(sha256)
    .bind(expires_at)
    .fetch_optional(pool)
    .await
}

/// Gives complete, unclaimed files of `project` to `job`; all or nothing. Returns the claimed
/// rows, or `None` when any of them is missing, unfinished, elsewhere or already taken.
pub async fn claim(
    pool: &PgPool,
    ids: &[Uuid],
    project: Uuid,
    job: Uuid,
    role: &str,
) -> sqlx::Result<Option<Vec<FileRow>>> {
    let mut unique: Vec<Uuid> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(*id);
        }
    }
    let ids = &unique[..];
    let mut tx = pool.begin().await?;
    let rows: Vec<FileRow> = sqlx::query_as(&format!(
        "UPDATE files SET job_id = $3, role = $4, expires_at = NULL \
         WHERE id = ANY($1) AND project_id = $2 AND state = 'complete' AND job_id IS NULL \
         RETURNING {COLUMNS}"
    ))
    .bind(ids)
    .bind(project)
    .bind(job)
    .bind(role)
    .fetch_all(&mut *tx)
    .await?;
    if rows.len() != ids.len() {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    // In the order asked for.
    Ok(Some(
        ids.iter()
            .filter_map(|id| rows.iter().find(|r| r.id == *id).cloned())
            .collect(),
    ))
}

/// Returns files claimed for a job whose command was then refused, so they can be used again.
pub async fn release(pool: &PgPool, ids: &[Uuid], expires_at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE files SET job_id = NULL, role = NULL, expires_at = $2 \
         WHERE id = ANY($1) AND state = 'complete'",
    )
    .bind(ids)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}
