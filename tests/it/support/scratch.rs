//! Scratch directories for tests that write files (doc examples, certificates): each is
//! created under the system's temporary directory and removed, with its contents, when dropped,
//! so test runs leave nothing behind in `/tmp`.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A fresh directory named `{prefix}-{uuid}`, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Self(path)
    }
}

impl Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}
