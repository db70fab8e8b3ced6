//! Removing file bytes that are due: a job's files when it expires or is deleted, uploads no
//! job took before their expiry, and (as a safety net) files of jobs the read model shows
//! expired or deleted, and chunks left behind by finished uploads. Each file is first marked in
//! the catalogue with a conditional update, so a file cannot be claimed by a job while its
//! bytes are being removed, and two replicas never both start on one; `removed_at` is set only
//! once the bytes are gone, so a removal the object store failed is retried by the next sweep.
//! Removing an object that is already gone is fine.

use chrono::{DateTime, Utc};
use object_store::path::Path;
use uuid::Uuid;

use crate::state::AppState;
use crate::storage::file_key;

const BATCH: i64 = 100;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptFiles {
    /// Uploads (finished or not) that no job took in time.
    pub uploads: usize,
    /// Files of expired or deleted jobs.
    pub job_files: usize,
    /// Removals that had failed before (the object store did not answer) and were finished.
    pub retried: usize,
}

/// Removes the bytes of every file `job` holds (input and result). Returns how many were
/// removed; one the object store failed stays marked and the next sweep retries it.
pub async fn remove_job_files(state: &AppState, job: Uuid) -> anyhow::Result<usize> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE files SET state = 'removed' WHERE job_id = $1 AND state = 'complete' RETURNING id",
    )
    .bind(job)
    .fetch_all(&state.pool)
    .await?;
    let mut removed = 0;
    for id in ids {
        if finished(state, id).await {
            removed += 1;
        }
    }
    Ok(removed)
}

/// `finish_removal`, logging a failure (the next sweep retries it); whether it is done.
async fn finished(state: &AppState, id: Uuid) -> bool {
    match finish_removal(state, id).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(file = %id, error = format!("{error:#}"), "could not remove a file's bytes; the janitor will retry");
            false
        }
    }
}

/// Deletes a marked file's object (and chunks), then records that its bytes are gone.
async fn finish_removal(state: &AppState, id: Uuid) -> anyhow::Result<()> {
    remove_upload_bytes(state, id).await?;
    state.storage.delete(&file_key(id)).await?;
    sqlx::query("UPDATE files SET removed_at = now() WHERE id = $1 AND removed_at IS NULL")
        .bind(id)
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// One pass over what is due at `now`.
pub async fn sweep(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<SweptFiles> {
    let mut swept = SweptFiles::default();
    // Removals that failed earlier (or are under way elsewhere: deleting twice is harmless).
    let unfinished: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM files WHERE state IN ('expired', 'removed') AND removed_at IS NULL \
          ORDER BY id LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(&state.pool)
    .await?;
    for id in unfinished {
        swept.retried += usize::from(finished(state, id).await);
    }
    let due: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE files SET state = 'expired' WHERE id IN ( \
             SELECT id FROM files WHERE job_id IS NULL AND expires_at <= $1 \
                AND (state IN ('uploading', 'complete') \
                     OR (state = 'assembling' AND expires_at <= $1 - interval '1 day')) \
              ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&state.pool)
    .await?;
    for id in due {
        swept.uploads += usize::from(finished(state, id).await);
    }
    let orphaned: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT f.job_id FROM files f JOIN jobs j ON j.id = f.job_id \
          WHERE f.state = 'complete' AND (j.expired_at IS NOT NULL OR j.deleted) LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(&state.pool)
    .await?;
    for job in orphaned {
        swept.job_files += remove_job_files(state, job).await?;
    }
    // Chunks an assembled upload could not remove at the time.
    let leftover: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT c.upload_id FROM upload_chunks c JOIN files f ON f.id = c.upload_id \
          WHERE f.state = 'complete' LIMIT $1",
    )
    .bind(BATCH)
    .fetch_all(&state.pool)
    .await?;
    for upload in leftover {
        if let Err(error) = remove_upload_bytes(state, upload).await {
            tracing::warn!(upload = %upload, error = format!("{error:#}"), "could not remove an upload's chunks");
        }
    }
    Ok(swept)
}

/// Removes the chunks of an upload (after it was assembled, or when it expires). A chunk's row
/// goes only after its object, so what could not be deleted is found again.
pub async fn remove_upload_bytes(state: &AppState, upload: Uuid) -> anyhow::Result<()> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT object_key FROM upload_chunks WHERE upload_id = $1")
            .bind(upload)
            .fetch_all(&state.pool)
            .await?;
    for key in &keys {
        state.storage.delete(&Path::from(key.as_str())).await?;
    }
    sqlx::query("DELETE FROM upload_chunks WHERE upload_id = $1 AND object_key = ANY($2)")
        .bind(upload)
        .bind(&keys)
        .execute(&state.pool)
        .await?;
    Ok(())
}
