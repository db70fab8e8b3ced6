//! Request and response bodies of the uploads endpoints, and the public shape of a stored file.

use chrono::{DateTime, Utc};
use herald_domain::FileRef;
use poem_openapi::{Enum, Object};
use uuid::Uuid;

use crate::files::FileRow;

/// `POST /uploads` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UploadCreate {
    /// The file's name (its last path component is kept).
    pub filename: String,
    /// The whole file's size in bytes.
    pub size: i64,
    /// Bytes per chunk (default 8 MiB); every chunk but the last has exactly this size.
    #[oai(nullable)]
    pub chunk_size: Option<i64>,
    /// Default `application/octet-stream`.
    #[oai(nullable)]
    pub content_type: Option<String>,
    /// Hex SHA-256 of the whole file, checked when the upload completes.
    #[oai(nullable)]
    pub sha256: Option<String>,
    /// Required for callers not bound to one project.
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Taking chunks.
    Uploading,
    /// `complete` is putting the chunks together.
    Assembling,
    /// Whole and checked: usable as a job's input (`"input": {"upload_id": ...}`).
    Complete,
    /// No job took it in time; its bytes are gone.
    Expired,
    /// Its job expired or was deleted; its bytes are gone.
    Removed,
}

#[derive(Debug, Object)]
pub struct UploadDto {
    pub id: Uuid,
    pub project_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: i64,
    pub chunk_size: i64,
    pub chunk_count: i32,
    pub status: UploadStatus,
    /// How many chunks have arrived.
    pub received_chunks: i32,
    /// The chunk numbers (from 0) still to send, ascending.
    pub missing_chunks: Vec<i32>,
    /// Hex SHA-256: the declared one until the upload is complete, then the stored bytes'.
    #[oai(nullable)]
    pub sha256: Option<String>,
    /// The job using the file, once one does.
    #[oai(nullable)]
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the upload goes unless a job has taken it.
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl UploadDto {
    pub fn render(row: &FileRow, received: &[i32]) -> Self {
        let count = row.chunk_count.unwrap_or(1);
        let status = match row.state.as_str() {
            "uploading" => UploadStatus::Uploading,
            "assembling" => UploadStatus::Assembling,
            "complete" => UploadStatus::Complete,
            "expired" => UploadStatus::Expired,
            _ => UploadStatus::Removed,
        };
        let missing = if status == UploadStatus::Uploading {
            (0..count)
                .filter(|n| received.binary_search(n).is_err())
                .collect()
        } else {
            Vec::new()
        };
        Self {
            id: row.id,
            project_id: row.project_id,
            filename: row.filename.clone(),
            content_type: row.content_type.clone(),
            size: row.size,
            chunk_size: row.chunk_size.unwrap_or(row.size),
            chunk_count: count,
            status,
            received_chunks: if status == UploadStatus::Uploading {
                received.len() as i32
            } else {
                count
            },
            missing_chunks: missing,
            sha256: row.sha256.clone().or_else(|| row.expected_sha256.clone()),
            job_id: row.job_id,
            created_at: row.created_at,
            completed_at: row.completed_at,
            expires_at: row.expires_at,
        }
    }
}

/// `PUT /uploads/{id}/chunks/{n}` answer.
#[derive(Debug, Object)]
pub struct ChunkReceipt {
    pub upload_id: Uuid,
    pub n: i32,
    pub size: i64,
    pub sha256: String,
    /// Chunks still missing after this one.
    pub missing_chunks: i32,
}

/// A stored file of a job (its input or its result).
#[derive(Debug, Clone, Object)]
pub struct FileDto {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Where to download it (supports `Range`).
    pub url: String,
}

impl FileDto {
    pub fn render(job: Uuid, file: &FileRef) -> Self {
        Self {
            id: file.id,
            filename: file.filename.clone(),
            content_type: file.content_type.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
            url: format!("/api/v1/jobs/{job}/files/{}", file.id),
        }
    }
}
