//! What makes two keyed requests the same: the path and the body, hashed; a multipart form is
//! hashed without its boundary (which clients pick at random for every request) and spooled to
//! a temporary file on the way, so a large upload is never held in memory.

use poem::http::header;
use poem::Request;
use sha2::{Digest, Sha256};

pub(super) fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hashes a multipart body without its boundary, which clients pick at random for every
/// request: a retried form built again is the same request.
struct FormDigest {
    digest: Sha256,
    boundary: Vec<u8>,
    pending: Vec<u8>,
}

impl FormDigest {
    fn new(prefix: &[u8], boundary: &str) -> Self {
        let mut digest = Sha256::new();
        digest.update((prefix.len() as u64).to_be_bytes());
        digest.update(prefix);
        Self {
            digest,
            boundary: boundary.as_bytes().to_vec(),
            pending: Vec::new(),
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        let width = self.boundary.len();
        if width == 0 {
            self.digest.update(&self.pending);
            self.pending.clear();
            return;
        }
        while let Some(at) = self.pending.windows(width).position(|w| w == self.boundary) {
            self.digest.update(&self.pending[..at]);
            self.digest.update(b"\0boundary\0");
            self.pending.drain(..at + width);
        }
        // Keep what could be the start of a boundary split across chunks.
        let settled = self.pending.len().saturating_sub(width - 1);
        self.digest.update(&self.pending[..settled]);
        self.pending.drain(..settled);
    }

    fn finish(mut self) -> String {
        self.digest.update(&self.pending);
        crate::storage::hex(&self.digest.finalize())
    }
}

fn boundary(req: &Request) -> String {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// A multipart body may be large (it carries a file), so it is not read into memory: it is
/// copied to a temporary file while it is hashed, and the handler reads it from there.
pub(super) async fn spool(req: &mut Request) -> std::io::Result<String> {
    use futures::StreamExt;
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    let mut digest = FormDigest::new(req.uri().path().as_bytes(), &boundary(req));
    let mut file = tokio::fs::File::from_std(tempfile::tempfile()?);
    let mut body = req.take_body().into_bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        digest.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.seek(std::io::SeekFrom::Start(0)).await?;
    req.set_body(poem::Body::from_async_read(file));
    Ok(digest.finish())
}

#[cfg(test)]
mod tests {
    use super::FormDigest;

    fn hash(boundary: &str, body: &str, split: usize) -> String {
        let mut digest = FormDigest::new(b"/api/v1/jobs", boundary);
        let (a, b) = body.as_bytes().split_at(split.min(body.len()));
        digest.update(a);
        digest.update(b);
        digest.finish()
    }

    #[test]
    fn a_form_hashes_the_same_whatever_its_boundary_and_however_it_is_split() {
        let form = |b: &str, value: &str| {
            format!("--{b}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\n{value}\r\n--{b}--\r\n")
        };
        let first = hash("abc123", &form("abc123", "render"), 5);
        assert_eq!(first, hash("zz9", &form("zz9", "render"), 40));
        assert_eq!(first, hash("abc123", &form("abc123", "render"), 0));
        assert_ne!(first, hash("abc123", &form("abc123", "encode"), 5));
    }
}
