//! `/api/v1/uploads`: resumable uploads of large files. A client declares the file (name, size,
//! chunk size, optional SHA-256), sends its chunks in any order and as often as it likes (each
//! with `X-Chunk-Sha256`; a chunk that does not match is refused and changes nothing), asks
//! which are missing, and completes the upload, which puts the chunks together, checks the whole
//! file and makes it usable as a job's input. Bytes stream straight to storage.

use std::sync::Arc;

use chrono::{Duration, Utc};
use herald_domain::ProjectId;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::upload_models::*;
use super::upload_steps::{is_sha256, not_open};
use super::ApiTags;
use crate::auth::Credentials;
use crate::files::{self, NewUpload};
use crate::http::json_body::JsonBody;
use crate::http::payloads::RawBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct UploadsApi {
    pub state: Arc<AppState>,
}

fn busy() -> ApiError {
    ApiError::Conflict {
        code: "UPLOAD_BUSY",
        detail: "the upload is being completed by another request".into(),
    }
}

#[derive(ApiResponse)]
pub enum Created {
    /// The upload is open; send its `chunk_count` chunks.
    #[oai(status = 201)]
    Created(Json<UploadDto>, #[oai(header = "Location")] String),
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
        self.receive_chunk(&row, n.0 as u32, expected_len, declared, body.0)
            .await
            .map(Json)
            .map_err(Into::into)
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
            "assembling" => return Err(busy().into()),
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
            return Err(busy().into());
        }
        // Assembly runs as a task of its own: a client that hangs up, or a timeout, must not
        // stop it halfway and leave the upload `assembling`.
        let steps = UploadsApi {
            state: self.state.clone(),
        };
        let assembly = tokio::spawn(async move {
            let done = steps.assemble(&row).await;
            if done.is_err() {
                // Open again, so chunks can be re-sent or completion retried.
                let pool = &steps.state.pool;
                let _ = files::transition(pool, row.id, "assembling", "uploading").await;
            }
            done
        });
        let done = assembly.await.map_err(ApiError::internal)??;
        Ok(Json(done))
    }
}
