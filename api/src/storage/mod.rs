//! Where file bytes live: one `object_store` store, a local directory by default or an
//! S3-compatible bucket. Everything streams: writes go through a multipart upload fed chunk by
//! chunk while the SHA-256 is computed on the way, reads come back as a byte stream (optionally
//! one range), so no file is ever held whole in memory. Object keys are derived from ids
//! (`files/{id}`, `uploads/{id}/{n}`), never from names a client chose.

pub mod settings;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

pub use settings::{StorageConfig, StorageKind, UploadsConfig};

/// Parts of a multipart write; S3 needs at least 5 MiB for every part but the last.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at the same time while a stream is written.
const PARTS_IN_FLIGHT: usize = 2;
/// Bytes read at a time from a local file.
const READ_BLOCK: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the object does not exist")]
    NotFound,
    /// The bytes being written could not be read (the client went away, or sent too much).
    #[error("reading the incoming bytes failed: {0}")]
    Incoming(std::io::Error),
    #[error(transparent)]
    Store(object_store::Error),
    #[error("reading a stored file failed: {0}")]
    Io(#[from] std::io::Error),
}

impl From<object_store::Error> for StorageError {
    fn from(error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Store(other),
        }
    }
}

/// What a completed write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
}

/// A read: the object's whole size and the bytes asked for.
pub struct Reading {
    pub total_size: u64,
    pub bytes: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// "local /path" or "s3 bucket at endpoint", for logs and `/health/detailed`.
    pub description: String,
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key of a stored file.
pub fn file_key(id: Uuid) -> Path {
    Path::from(format!("files/{id}"))
}

/// The key of chunk `n` of an upload in progress.
pub fn chunk_key(upload: Uuid, n: u32) -> Path {
    Path::from(format!("uploads/{upload}/{n}"))
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>, description: String) -> Self {
        Self { store, description }
    }

    /// A store in memory (for building the OpenAPI document without a configured store).
    pub fn in_memory() -> Self {
        Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory".into(),
        )
    }

    /// Streams `bytes` into the object at `key`, hashing them on the way. On any error the
    /// partial object is abandoned, so a key holds either a whole write or nothing new.
    pub async fn write<S>(&self, key: &Path, bytes: S) -> Result<Written, StorageError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
    {
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut digest = Sha256::new();
        let mut size = 0u64;
        let mut bytes = std::pin::pin!(bytes);
        while let Some(next) = bytes.next().await {
            let chunk = match next {
                Ok(chunk) => chunk,
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::Incoming(error));
                }
            };
            if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(error.into());
            }
            digest.update(&chunk);
            size += chunk.len() as u64;
            writer.put(chunk);
        }
        writer.finish().await?;
        Ok(Written {
            size,
            sha256: hex(&digest.finalize()),
        })
    }

    /// Reads the object at `key`, the whole of it or the given byte range.
    pub async fn read(
        &self,
        key: &Path,
        range: Option<Range<u64>>,
    ) -> Result<Reading, StorageError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let result = self.store.get_opts(key, options).await?;
        let total_size = result.meta.size;
        let bytes = match result.payload {
            // A local file is read in large blocks: object_store's own stream reads 8 KiB at a
            // time, which caps a download at a fraction of the disk's speed.
            GetResultPayload::File(file, _) => {
                let range = result.range;
                let mut file = tokio::fs::File::from_std(file);
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                ReaderStream::with_capacity(file.take(range.end - range.start), READ_BLOCK).boxed()
            }
            GetResultPayload::Stream(stream) => stream.map_err(std::io::Error::other).boxed(),
        };
        Ok(Reading { total_size, bytes })
    }

    /// Concatenates `parts` in order into the object at `key` (streamed, hashed).
    pub async fn concatenate(&self, parts: Vec<Path>, key: &Path) -> Result<Written, StorageError> {
        let storage = self.clone();
        let bytes = futures::stream::iter(parts)
            .then(move |part| {
                let storage = storage.clone();
                async move {
                    let reading = storage
                        .read(&part, None)
                        .await
                        .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(reading.bytes)
                }
            })
            .try_flatten()
            .boxed();
        self.write(key, bytes).await
    }

    /// Deletes the object at `key`; one that is already gone is fine.
    pub async fn delete(&self, key: &Path) -> Result<(), StorageError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Whether an object exists at `key` (for tests and health checks).
    pub async fn exists(&self, key: &Path) -> Result<bool, StorageError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}
