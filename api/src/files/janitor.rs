//! Removing file bytes that are due: a job's files when it expires or is deleted, uploads no
//! job took before their expiry, and (as a safety net) files of jobs the read model shows
//! expired or deleted. Each file is first marked in the catalogue with a conditional update,
//! so a file cannot be claimed by a job while its bytes are being removed, and two replicas
//! never both act on one; removing an object that is already gone is fine.

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
}

/// Removes the bytes of every file `job` holds (input and result). Returns how many.
pub async fn remove_job_files(state: &AppState, job: Uuid) -> anyhow::Result<usize> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE files SET state = 'removed', removed_at = now() \
         WHERE job_id = $1 AND state = 'complete' RETURNING id",
    )
    .bind(job)
    .fetch_all(&state.pool)
    .await?;
    for id in &ids {
        state.storage.delete(&file_key(*id)).await?;
    }
    Ok(ids.len())
}

/// One pass over what is due at `now`.
pub async fn sweep(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<SweptFiles> {
    let mut swept = SweptFiles::default();
    let due: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE files SET state = 'expired', removed_at = now() WHERE id IN ( \
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
    for id in &due {
        remove_upload_bytes(state, *id).await?;
        state.storage.delete(&file_key(*id)).await?;
        swept.uploads += 1;
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
    Ok(swept)
}

/// Removes the chunks of an upload (after it was assembled, or when it expires).
pub async fn remove_upload_bytes(state: &AppState, upload: Uuid) -> anyhow::Result<()> {
    let keys: Vec<String> =
        sqlx::query_scalar("DELETE FROM upload_chunks WHERE upload_id = $1 RETURNING object_key")
            .bind(upload)
            .fetch_all(&state.pool)
            .await?;
    for key in keys {
        state.storage.delete(&Path::from(key)).await?;
    }
    Ok(())
}
