//! A stored file as the domain sees it: a reference (id, name, type, size, SHA-256) that job
//! events carry for their input and result files. The bytes live in object storage under a key
//! derived from the id; the domain never touches them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
}
