//! `/api/v1/uploads`: resumable uploads of large files. A client declares the file (name, size,
//! chunk size, optional SHA-256), sends its chunks in any order and as often as it likes (each
//! with `X-Chunk-Sha256`; a chunk that does not match is refused and changes nothing), asks
//! which are missing, and completes the upload, which puts the chunks together, checks the whole
//! file and makes it usable as a job's input. Bytes stream straight to storage.

use std::sync::Arc;

use chrono::{Duration, Utc};
use herald_domain::{ProjectId, Scope};
use object_store::path::Path as ObjectPath;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::upload_models::*;
use super::ApiTags;
use crate::auth::{Caller, Credentials};
use crate::files::{self, janitor, FileRow, NewUpload};
use crate::http::json_body::JsonBody;
use crate::http::payloads::RawBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;
use crate::storage::{file_key, StorageError};

const DEFAULT_CHUNK: i64 = 8 * 1024 * 1024;
const MAX_CHUNKS: i64 = 10_000;

pub struct UploadsApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Created {
    /// The upload is open; send its `chunk_count` chunks.
    #[oai(status = 201)]
    Created(Json<UploadDto>, #[oai(header = "Location")] String),
}

pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn unprocessable(code: &'static str, detail: String) -> ApiError {
    ApiError::Unprocessable { code, detail }
}

fn not_open(row: &FileRow) -> ApiError {
    ApiError::Conflict {
        code: "UPLOAD_NOT_OPEN",
        detail: format!("the upload is {}; it takes no more chunks", row.state),
    }
}

impl UploadsApi {
    async fn caller(&self, auth: &Credentials) -> Result<Caller, ApiError> {
        self.state
            .authorize_either(auth, Scope::JobsWrite, Scope::JobsWork)
            .await
    }

    /// The upload, if the caller may see it (others get the same 404 as a missing one).
    async fn find(&self, caller: &Caller, id: Uuid) -> Result<FileRow, ApiError> {
        let row = files::get(&self.state.pool, id)
            .await?
            .filter(|row| row.chunk_count.is_some())
            .filter(|row| caller.can_see(ProjectId::from_uuid(row.project_id)))
            .ok_or_else(|| ApiError::not_found("upload"))?;
        caller.require_in(ProjectId::from_uuid(row.project_id))?;
        Ok(row)
    }

    async fn render(&self, row: &FileRow) -> Result<UploadDto, ApiError> {
        let received = files::received_chunks(&self.state.pool, row.id).await?;
        Ok(UploadDto::render(row, &received))
    }

    fn validate(&self, body: &UploadCreate, caller: &Caller) -> Result<(Uuid, i64), ApiError> {
        let limits = &self.state.config.uploads;
        let mut errors = Vec::new();
        let chunk_size = body.chunk_size.unwrap_or(DEFAULT_CHUNK);
        if body.size < 1 || body.size as u64 > limits.max_upload_bytes {
            let message = format!("must be between 1 and {}", limits.max_upload_bytes);
            errors.push(herald_domain::FieldError::new("size", message));
        }
        if chunk_size < 1 || chunk_size as u64 > limits.max_chunk_bytes {
            let message = format!("must be between 1 and {}", limits.max_chunk_bytes);
            errors.push(herald_domain::FieldError::new("chunk_size", message));
        } else if body.size > 0
            && (body.size as u64).div_ceil(chunk_size as u64) > MAX_CHUNKS as u64
        {
            let message = format!("too small: an upload has at most {MAX_CHUNKS} chunks");
            errors.push(herald_domain::FieldError::new("chunk_size", message));
        }
        if body.filename.trim().is_empty() || body.filename.len() > 1024 {
            errors.push(herald_domain::FieldError::new(
                "filename",
                "must be 1-1024 characters",
            ));
        }
        if body.sha256.as_deref().is_some_and(|s| !is_sha256(s)) {
            errors.push(herald_domain::FieldError::new(
                "sha256",
                "must be 64 hex digits",
            ));
        }
        let project = match (caller.project_id(), body.project_id) {
            (Some(own), None) => Some(own.as_uuid()),
            (Some(own), Some(asked)) if own.as_uuid() == asked => Some(asked),
            (Some(_), Some(_)) => {
                errors.push(herald_domain::FieldError::new(
                    "project_id",
                    "must be the key's own project",
                ));
                None
            }
            (None, Some(asked)) if caller.can_see(ProjectId::from_uuid(asked)) => Some(asked),
            (None, Some(_)) => {
                errors.push(herald_domain::FieldError::new(
                    "project_id",
                    "no such project",
                ));
                None
            }
            (None, None) => {
                errors.push(herald_domain::FieldError::new(
                    "project_id",
                    "required unless the caller is a key bound to one project",
                ));
                None
            }
        };
        match project {
            Some(project) if errors.is_empty() => Ok((project, chunk_size)),
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Uploads")]
impl UploadsApi {
    /// Start a resumable upload
    ///
    /// Declares a file to be sent in chunks of `chunk_size` bytes (the last may be shorter);
    /// answers its id and `chunk_count`. Unused uploads expire after `uploads.expiry_hours`
    /// (24 h) and their bytes are removed. Scope `jobs:write` or `jobs:work`.
    #[oai(path = "/uploads", method = "post", operation_id = "createUpload")]
    async fn create(&self, auth: Credentials, body: JsonBody<UploadCreate>) -> ApiResult<Created> {
        let caller = self.caller(&auth).await?;
        let body = body.0;
        let (project, chunk_size) = self.validate(&body, &caller)?;
        caller.require_in(ProjectId::from_uuid(project))?;
        let filename = files::intake::clean_filename(Some(&body.filename), "file");
        let content_type = files::intake::clean_content_type(body.content_type.as_deref());
        let expected = body.sha256.as_deref().map(str::to_ascii_lowercase);
        let created_by = caller.rate_subject();
        let new = NewUpload {
            project_id: project,
            filename: &filename,
            content_type: &content_type,
            size: body.size as u64,
            chunk_size: chunk_size as u64,
            expected_sha256: expected.as_deref(),
            created_by: &created_by,
            expires_at: Utc::now() + Duration::hours(self.state.config.uploads.expiry_hours.into()),
        };
        let row = files::create_upload(&self.state.pool, &new).await?;
        let location = format!("/api/v1/uploads/{}", row.id);
        Ok(Created::Created(Json(self.render(&row).await?), location))
    }

    /// Read an upload
    ///
    /// Its status and the chunks still missing. Scope `jobs:write` or `jobs:work`.
    #[oai(path = "/uploads/:id", method = "get", operation_id = "getUpload")]
    async fn get(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<UploadDto>> {
        let caller = self.caller(&auth).await?;
        let row = self.find(&caller, id.0).await?;
        Ok(Json(self.render(&row).await?))
    }

    /// Send a chunk
    ///
    /// The raw bytes of chunk `n` (from 0), with their hex SHA-256 in `X-Chunk-Sha256`.
    /// Chunks may come in any order and be sent again (the last good copy counts). A chunk of
    /// the wrong size (`CHUNK_SIZE_MISMATCH`) or checksum (`CHECKSUM_MISMATCH`) is refused
    /// with 422 and changes nothing. Scope `jobs:write` or `jobs:work`.
    #[oai(
        path = "/uploads/:id/chunks/:n",
        method = "put",
        operation_id = "putUploadChunk"
    )]
    async fn put_chunk(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        n: Path<i64>,
        #[oai(name = "X-Chunk-Sha256")] checksum: Header<Option<String>>,
        body: RawBody,
    ) -> ApiResult<Json<ChunkReceipt>> {
        let caller = self.caller(&auth).await?;
        let row = self.find(&caller, id.0).await?;
        let Some(declared) = checksum
            .0
            .filter(|c| is_sha256(c))
            .map(|c| c.to_ascii_lowercase())
        else {
            return Err(
                ApiError::field("X-Chunk-Sha256", "required: the chunk's hex SHA-256").into(),
            );
        };
        let count = row.chunk_count.unwrap_or(0);
        let Some(expected_len) = u32::try_from(n.0).ok().and_then(|n| row.chunk_len(n)) else {
            let message = format!("must be between 0 and {}", count - 1);
            return Err(ApiError::field("n", &message).into());
        };
        if row.state != "uploading" {
            return Err(not_open(&row).into());
        }
        let n = n.0 as u32;
        let key = format!("uploads/{}/{n}.{}", row.id, Uuid::now_v7().simple());
        let object = ObjectPath::from(key.clone());
        let written = match self
            .state
            .storage
            .write(&object, body.0.into_bytes_stream())
            .await
        {
            Ok(written) => written,
            Err(StorageError::Incoming(error)) => {
                return Err(ApiError::BadRequest {
                    code: "BODY_UNREADABLE",
                    detail: format!("the chunk could not be read: {error}"),
                }
                .into())
            }
            Err(error) => return Err(ApiError::internal(anyhow::Error::new(error)).into()),
        };
        let refusal = if written.size != expected_len {
            Some(unprocessable(
                "CHUNK_SIZE_MISMATCH",
                format!(
                    "chunk {n} must have {expected_len} bytes, not {}",
                    written.size
                ),
            ))
        } else if written.sha256 != declared {
            Some(unprocessable(
                "CHECKSUM_MISMATCH",
                format!(
                    "chunk {n}'s bytes have SHA-256 {}, not {declared}",
                    written.sha256
                ),
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.state
                .storage
                .delete(&object)
                .await
                .map_err(ApiError::internal)?;
            return Err(refusal.into());
        }
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT object_key FROM upload_chunks WHERE upload_id = $1 AND n = $2",
        )
        .bind(row.id)
        .bind(n as i32)
        .fetch_optional(&self.state.pool)
        .await?;
        let kept = files::record_chunk(
            &self.state.pool,
            row.id,
            n,
            written.size,
            &written.sha256,
            &key,
        )
        .await?;
        let stale = if kept { previous } else { Some(key) };
        if let Some(stale) = stale {
            self.state
                .storage
                .delete(&ObjectPath::from(stale))
                .await
                .map_err(ApiError::internal)?;
        }
        if !kept {
            return Err(not_open(&row).into());
        }
        let received = files::received_chunks(&self.state.pool, row.id).await?;
        Ok(Json(ChunkReceipt {
            upload_id: row.id,
            n: n as i32,
            size: written.size as i64,
            sha256: written.sha256,
            missing_chunks: count - received.len() as i32,
        }))
    }

    /// Complete an upload
    ///
    /// Puts the chunks together, checks the declared SHA-256 (`CHECKSUM_MISMATCH`, 422; the
    /// chunks stay so a bad one can be sent again) and makes the file usable as a job's input:
    /// `"input": {"upload_id": "..."}`. 409 `UPLOAD_INCOMPLETE` while chunks are missing.
    /// Completing a complete upload answers it again. Scope `jobs:write` or `jobs:work`.
    #[oai(
        path = "/uploads/:id/complete",
        method = "post",
        operation_id = "completeUpload"
    )]
    async fn complete(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<UploadDto>> {
        let caller = self.caller(&auth).await?;
        let row = self.find(&caller, id.0).await?;
        match row.state.as_str() {
            "uploading" => {}
            "complete" => return Ok(Json(self.render(&row).await?)),
            "assembling" => {
                return Err(ApiError::Conflict {
                    code: "UPLOAD_BUSY",
                    detail: "the upload is being completed by another request".into(),
                }
                .into())
            }
            _ => return Err(not_open(&row).into()),
        }
        let received = files::received_chunks(&self.state.pool, row.id).await?;
        let dto = UploadDto::render(&row, &received);
        if !dto.missing_chunks.is_empty() {
            let first: Vec<String> = dto
                .missing_chunks
                .iter()
                .take(10)
                .map(i32::to_string)
                .collect();
            return Err(ApiError::Conflict {
                code: "UPLOAD_INCOMPLETE",
                detail: format!(
                    "{} chunks are missing (first: {}); GET the upload for the whole list",
                    dto.missing_chunks.len(),
                    first.join(", ")
                ),
            }
            .into());
        }
        if !files::transition(&self.state.pool, row.id, "uploading", "assembling").await? {
            return Err(ApiError::Conflict {
                code: "UPLOAD_BUSY",
                detail: "the upload is being completed by another request".into(),
            }
            .into());
        }
        match self.assemble(&row).await {
            Ok(done) => Ok(Json(done)),
            Err(error) => {
                // Open again, so chunks can be re-sent or completion retried.
                let _ =
                    files::transition(&self.state.pool, row.id, "assembling", "uploading").await;
                Err(error.into())
            }
        }
    }
}

impl UploadsApi {
    async fn assemble(&self, row: &FileRow) -> Result<UploadDto, ApiError> {
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
        janitor::remove_upload_bytes(&self.state, row.id)
            .await
            .map_err(ApiError::internal)?;
        Ok(UploadDto::render(&done, &[]))
    }
}
