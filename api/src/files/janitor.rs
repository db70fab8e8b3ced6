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

/// What one sweep removed: files counted once, when their bytes are gone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweptFiles {
    /// Uploads (finished or not) that no job took in time.
    pub uploads: usize,
    /// Files of expired or deleted jobs.
    pub job_files: usize,
}

/// Marks every file `job` holds (input and result) for removal; the janitor removes the bytes.
pub async fn mark_job_files(state: &AppState, job: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE files SET state = 'removed' WHERE job_id = $1 AND state = 'complete' RETURNING id",
    )
    .bind(job)
    .fetch_all(&state.pool)
    .await
}

/// Marks and removes the files of `job` at once (a deleted job). Returns how many were
/// removed; one the object store refused stays marked and a later sweep retries it.
pub async fn remove_job_files(state: &AppState, job: Uuid) -> anyhow::Result<usize> {
    let mut removed = 0;
    for id in mark_job_files(state, job).await? {
        removed += usize::from(finished(state, id).await);
    }
    Ok(removed)
}

/// `finish_removal`; a failure is logged and noted for a later retry. Whether it is done.
async fn finished(state: &AppState, id: Uuid) -> bool {
    let Err(error) = finish_removal(state, id).await else {
        return true;
    };
    tracing::warn!(file = %id, error = format!("{error:#}"), "could not remove a file's bytes; the janitor will retry");
    let noted = sqlx::query("UPDATE files SET removal_attempted_at = now() WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await;
    if let Err(error) = noted {
        tracing::warn!(file = %id, %error, "could not note a failed removal");
    }
    false
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

/// One pass over what is due at `now`: marks expired uploads and files of expired or deleted
/// jobs, then removes the bytes of what is marked (new marks first, then refused removals
/// a minute after their refusal). The first refusal ends the pass: the store is likely unavailable, and
/// the rest waits for the next sweep instead of each one waiting out the store's retries.
pub async fn sweep(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<SweptFiles> {
    sqlx::query(
        "UPDATE files SET state = 'expired' WHERE id IN ( \
             SELECT id FROM files WHERE job_id IS NULL AND expires_at <= $1 \
                AND (state IN ('uploading', 'complete') \
                     OR (state = 'assembling' AND expires_at <= $1 - interval '1 day')) \
              ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(now)
    .bind(BATCH)
    .execute(&state.pool)
    .await?;
    sqlx::query(
        "UPDATE files SET state = 'removed' WHERE id IN ( \
             SELECT f.id FROM files f JOIN jobs j ON j.id = f.job_id \
              WHERE f.state = 'complete' AND (j.expired_at IS NOT NULL OR j.deleted) \
              LIMIT $1 FOR UPDATE OF f SKIP LOCKED)",
    )
    .bind(BATCH)
    .execute(&state.pool)
    .await?;
    // A refused removal is tried again a minute after it was refused.
    let marked: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, state FROM files WHERE state IN ('expired', 'removed') AND removed_at IS NULL \
            AND (removal_attempted_at IS NULL OR removal_attempted_at <= $1 - interval '1 minute') \
          ORDER BY removal_attempted_at NULLS FIRST, id LIMIT $2",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&state.pool)
    .await?;
    let mut swept = SweptFiles::default();
    for (id, file_state) in marked {
        if !finished(state, id).await {
            return Ok(swept);
        }
        match file_state.as_str() {
            "expired" => swept.uploads += 1,
            _ => swept.job_files += 1,
        }
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
            break;
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
