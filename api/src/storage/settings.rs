//! The `[storage]` and `[uploads]` settings, and building the configured store from them.

use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use serde::Deserialize;

use super::Storage;
use crate::config::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// For `local`: the directory (empty: `files/` under the data directory).
    pub path: String,
    pub s3_bucket: String,
    /// Empty: AWS's own endpoint for the region.
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_access_key_id: Secret,
    pub s3_secret_access_key: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// Largest file sent with `POST /jobs` or `POST /jobs/{id}/complete` as multipart.
    pub max_multipart_bytes: u64,
    /// Largest chunk of a resumable upload.
    pub max_chunk_bytes: u64,
    /// Largest file a resumable upload may declare.
    pub max_upload_bytes: u64,
    /// Hours an upload (finished or not) waits to be used by a job before its bytes go.
    pub expiry_hours: u32,
    /// Time allowed for one request that streams a file in.
    pub request_timeout_seconds: u64,
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.kind == StorageKind::S3 && self.s3_bucket.trim().is_empty() {
            return Err("storage.s3_bucket is required when storage.kind = \"s3\"".into());
        }
        Ok(())
    }

    /// Opens the configured store (creating the local directory when needed).
    pub fn open(&self, data_dir: &FsPath) -> anyhow::Result<Storage> {
        match self.kind {
            StorageKind::Local => {
                let path = if self.path.trim().is_empty() {
                    data_dir.join("files")
                } else {
                    self.path.trim().into()
                };
                std::fs::create_dir_all(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the storage directory {}: {e}",
                        path.display()
                    )
                })?;
                let store = LocalFileSystem::new_with_prefix(&path)?.with_automatic_cleanup(true);
                Ok(Storage::new(
                    Arc::new(store),
                    format!("local directory {}", path.display()),
                ))
            }
            StorageKind::S3 => {
                // The HTTP client speaks TLS through rustls with the ring provider, as the
                // webhook sender does.
                let _ = rustls::crypto::ring::default_provider().install_default();
                // AWS_* variables fill in whatever is not configured here.
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&self.s3_bucket);
                if !self.s3_region.is_empty() {
                    builder = builder.with_region(&self.s3_region);
                }
                if !self.s3_endpoint.is_empty() {
                    builder = builder
                        .with_endpoint(&self.s3_endpoint)
                        .with_allow_http(self.s3_endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if !self.s3_access_key_id.is_empty() {
                    builder = builder
                        .with_access_key_id(self.s3_access_key_id.expose())
                        .with_secret_access_key(self.s3_secret_access_key.expose());
                }
                let description = match self.s3_endpoint.as_str() {
                    "" => format!("s3 bucket {}", self.s3_bucket),
                    endpoint => format!("s3 bucket {} at {endpoint}", self.s3_bucket),
                };
                Ok(Storage::new(Arc::new(builder.build()?), description))
            }
        }
    }
}

impl UploadsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_chunk_bytes < 1024 || self.max_multipart_bytes < 1024 {
            return Err(
                "uploads.max_chunk_bytes and uploads.max_multipart_bytes must be at least 1024"
                    .into(),
            );
        }
        if self.max_upload_bytes < self.max_chunk_bytes {
            return Err("uploads.max_upload_bytes must be at least uploads.max_chunk_bytes".into());
        }
        if self.expiry_hours == 0 || self.request_timeout_seconds == 0 {
            return Err(
                "uploads.expiry_hours and uploads.request_timeout_seconds must be positive".into(),
            );
        }
        Ok(())
    }
}
