//! The steps behind the uploads endpoints: who may touch an upload, what a new one may declare,
//! receiving a chunk (streamed to a fresh object, checked, then recorded; a refused chunk
//! never replaces a good one) and assembling the chunks into the finished file.

use chrono::{Duration, Utc};
use futures::StreamExt;
use herald_domain::{FieldError, ProjectId, Scope};
use object_store::path::Path as ObjectPath;
use uuid::Uuid;

use super::upload_models::*;
use super::uploads::UploadsApi;
use crate::auth::{Caller, Credentials};
use crate::files::{self, janitor, FileRow, Kept};
use crate::http::problem::ApiError;
use crate::storage::{file_key, StorageError};

pub const DEFAULT_CHUNK: i64 = 8 * 1024 * 1024;
const MAX_CHUNKS: i64 = 10_000;

pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn unprocessable(code: &'static str, detail: String) -> ApiError {
    ApiError::Unprocessable { code, detail }
}

pub fn not_open(row: &FileRow) -> ApiError {
    ApiError::Conflict {
        code: "UPLOAD_NOT_OPEN",
        detail: format!("the upload is {}; it takes no more chunks", row.state),
    }
}

impl UploadsApi {
    pub async fn caller(&self, auth: &Credentials) -> Result<Caller, ApiError> {
        self.state
            .authorize_either(auth, Scope::JobsWrite, Scope::JobsWork)
            .await
    }

    /// The upload, if the caller may see it (others get the same 404 as a missing one).
    pub async fn find(&self, caller: &Caller, id: Uuid) -> Result<FileRow, ApiError> {
        let row = files::get(&self.state.pool, id)
            .await?
            .filter(|row| row.chunk_count.is_some())
            .filter(|row| caller.can_see(ProjectId::from_uuid(row.project_id)))
            .ok_or_else(|| ApiError::not_found("upload"))?;
        caller.require_in(ProjectId::from_uuid(row.project_id))?;
        Ok(row)
    }

    pub async fn render(&self, row: &FileRow) -> Result<UploadDto, ApiError> {
        let received = files::received_chunks(&self.state.pool, row.id).await?;
        Ok(UploadDto::render(row, &received))
    }

    pub fn validate(&self, body: &UploadCreate, caller: &Caller) -> Result<(Uuid, i64), ApiError> {
        let limits = &self.state.config.uploads;
        let mut errors = Vec::new();
        let chunk_size = body.chunk_size.unwrap_or(DEFAULT_CHUNK);
        if body.size < 1 || body.size as u64 > limits.max_upload_bytes {
            let message = format!("must be between 1 and {}", limits.max_upload_bytes);
            errors.push(FieldError::new("size", message));
        }
        if chunk_size < 1 || chunk_size as u64 > limits.max_chunk_bytes {
            let message = format!("must be between 1 and {}", limits.max_chunk_bytes);
            errors.push(FieldError::new("chunk_size", message));
        } else if body.size > 0
            && (body.size as u64).div_ceil(chunk_size as u64) > MAX_CHUNKS as u64
        {
            let message = format!("too small: an upload has at most {MAX_CHUNKS} chunks");
            errors.push(FieldError::new("chunk_size", message));
        }
        if body.filename.trim().is_empty() || body.filename.len() > 1024 {
            errors.push(FieldError::new("filename", "must be 1-1024 characters"));
        }
        if body.sha256.as_deref().is_some_and(|s| !is_sha256(s)) {
            errors.push(FieldError::new("sha256", "must be 64 hex digits"));
        }
        let project = match caller.target_project(body.project_id) {
            Ok(project) if caller.can_see(project) => Some(project.as_uuid()),
            Ok(_) => {
                errors.push(FieldError::new("project_id", "no such project"));
                None
            }
            Err(error) => {
                errors.push(error);
                None
            }
        };
        match project {
            Some(project) if errors.is_empty() => Ok((project, chunk_size)),
            _ => Err(ApiError::Validation(errors)),
        }
    }

    /// Streams chunk `n` to storage and keeps it if its size and checksum are right.
    pub async fn receive_chunk(
        &self,
        row: &FileRow,
        n: u32,
        expected_len: u64,
        declared: String,
        body: poem::Body,
    ) -> Result<ChunkReceipt, ApiError> {
        let storage = &self.state.storage;
        let key = format!("uploads/{}/{n}.{}", row.id, Uuid::now_v7().simple());
        let object = ObjectPath::from(key.clone());
        // Stop reading (and writing) as soon as the chunk is longer than it may be.
        let mut arrived = 0u64;
        let capped = body.into_bytes_stream().map(move |bytes| {
            let bytes = bytes?;
            arrived += bytes.len() as u64;
            match arrived > expected_len {
                true => Err(std::io::Error::other(ChunkTooLong)),
                false => Ok(bytes),
            }
        });
        let written = match storage.write(&object, capped).await {
            Ok(written) => written,
            Err(StorageError::Incoming(error)) if is_too_long(&error) => {
                let detail = format!("chunk {n} must have {expected_len} bytes, and more arrived");
                return Err(unprocessable("CHUNK_SIZE_MISMATCH", detail));
            }
            Err(StorageError::Incoming(error)) => {
                return Err(ApiError::BadRequest {
                    code: "BODY_UNREADABLE",
                    detail: format!("the chunk could not be read: {error}"),
                })
            }
            Err(error) => return Err(ApiError::internal(error)),
        };
        let refusal = if written.size != expected_len {
            let size = written.size;
            let detail = format!("chunk {n} must have {expected_len} bytes, not {size}");
            Some(unprocessable("CHUNK_SIZE_MISMATCH", detail))
        } else if written.sha256 != declared {
            let actual = &written.sha256;
            let detail = format!("chunk {n}'s bytes have SHA-256 {actual}, not {declared}");
            Some(unprocessable("CHECKSUM_MISMATCH", detail))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            storage.delete(&object).await.map_err(ApiError::internal)?;
            return Err(refusal);
        }
        let pool = &self.state.pool;
        let kept =
            files::record_chunk(pool, row.id, n, written.size, &written.sha256, &key).await?;
        // The copy no longer wanted: the one replaced, or this one if the upload closed.
        let (stale, closed) = match kept {
            Kept::Replaced(previous) => (previous, false),
            Kept::Closed => (Some(key), true),
        };
        if let Some(stale) = stale {
            let stale = ObjectPath::from(stale);
            storage.delete(&stale).await.map_err(ApiError::internal)?;
        }
        if closed {
            return Err(not_open(row));
        }
        let received = files::received_chunks(pool, row.id).await?;
        Ok(ChunkReceipt {
            upload_id: row.id,
            n: n as i32,
            size: written.size as i64,
            sha256: written.sha256,
            missing_chunks: row.chunk_count.unwrap_or(0) - received.len() as i32,
        })
    }
}

/// The marker a chunk's byte stream fails with when it runs past the chunk's length.
#[derive(Debug, thiserror::Error)]
#[error("the chunk is longer than declared")]
struct ChunkTooLong;

fn is_too_long(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<ChunkTooLong>())
}

impl UploadsApi {
    pub async fn assemble(&self, row: &FileRow) -> Result<UploadDto, ApiError> {
        let parts = files::chunk_keys(&self.state.pool, row.id)
            .await?
            .into_iter()
            .map(ObjectPath::from)
            .collect();
        let target = file_key(row.id);
        let storage = &self.state.storage;
        let written = storage
            .concatenate(parts, &target)
            .await
            .map_err(ApiError::internal)?;
        let wanted = row.expected_sha256.as_deref();
        if written.size != row.size as u64 || wanted.is_some_and(|w| w != written.sha256) {
            storage.delete(&target).await.map_err(ApiError::internal)?;
            return Err(unprocessable(
                "CHECKSUM_MISMATCH",
                format!(
                    "the assembled file ({} bytes) has SHA-256 {}, not the declared {}",
                    written.size,
                    written.sha256,
                    wanted.unwrap_or("-")
                ),
            ));
        }
        let expires_at =
            Utc::now() + Duration::hours(self.state.config.uploads.expiry_hours.into());
        let done =
            files::complete_upload(&self.state.pool, row.id, &written.sha256, expires_at).await?;
        let Some(done) = done else {
            // Expired while it was being put together: its bytes go too.
            storage.delete(&target).await.map_err(ApiError::internal)?;
            return Err(not_open(row));
        };
        // The upload is complete: chunks the object store would not remove now are found
        // again by the janitor.
        if let Err(error) = janitor::remove_upload_bytes(&self.state, row.id).await {
            tracing::warn!(upload = %row.id, error = format!("{error:#}"), "could not remove an upload's chunks");
        }
        Ok(UploadDto::render(&done, &[]))
    }
}
