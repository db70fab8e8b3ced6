//! Storing a file that arrives whole in a multipart request (`POST /jobs` with a `file` part,
//! `POST /jobs/{id}/complete` with `files` parts). poem-openapi has spooled the part to a
//! temporary file; from there it is streamed into storage, hashed on the way, and catalogued
//! as a complete file no job holds yet.

use chrono::Utc;
use herald_domain::FileRef;
use poem_openapi::types::multipart::Upload;
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use crate::http::problem::ApiError;
use crate::state::AppState;
use crate::storage::file_key;

/// A client's file name reduced to a safe final component (no directories, no control
/// characters, at most 255 bytes), or `fallback`.
pub fn clean_filename(name: Option<&str>, fallback: &str) -> String {
    let base = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let mut clean: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c) && *c != '"')
        .collect();
    while clean.len() > 255 {
        clean.pop();
    }
    let clean = clean.trim().to_owned();
    if clean.is_empty() || clean == "." || clean == ".." {
        fallback.to_owned()
    } else {
        clean
    }
}

/// Characters that reorder how a name is displayed (`invoice\u{202E}fdp.exe` shows as
/// "invoiceexe.pdf").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A declared content type if it looks like one (`type/subtype`), else `application/octet-stream`.
pub fn clean_content_type(declared: Option<&str>) -> String {
    match declared.map(str::trim) {
        Some(ct)
            if ct.len() <= 200
                && ct.contains('/')
                && ct.chars().all(|c| c.is_ascii_graphic() || c == ' ') =>
        {
            ct.to_owned()
        }
        _ => "application/octet-stream".to_owned(),
    }
}

/// Streams a multipart part into storage and catalogues it for `project`.
pub async fn store_part(
    state: &AppState,
    project: Uuid,
    created_by: &str,
    part: Upload,
) -> Result<FileRef, ApiError> {
    let id = Uuid::now_v7();
    let filename = clean_filename(part.file_name(), "file");
    let content_type = clean_content_type(part.content_type());
    let bytes = ReaderStream::with_capacity(part.into_file(), 256 * 1024);
    let written = state
        .storage
        .write(&file_key(id), bytes)
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
    let file = FileRef {
        id,
        filename,
        content_type,
        size: written.size,
        sha256: written.sha256,
    };
    let expires_at = Utc::now() + chrono::Duration::hours(state.config.uploads.expiry_hours.into());
    super::create_complete(&state.pool, id, project, &file, created_by, expires_at).await?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_file_names_are_reduced_to_a_safe_last_component() {
        assert_eq!(clean_filename(Some("talk.wav"), "file"), "talk.wav");
        assert_eq!(clean_filename(Some("../../etc/passwd"), "file"), "passwd");
        assert_eq!(clean_filename(Some("C:\\Users\\a\\b.mp4"), "file"), "b.mp4");
        assert_eq!(clean_filename(Some("a\"b\n.txt"), "file"), "ab.txt");
        assert_eq!(clean_filename(Some(".."), "file"), "file");
        assert_eq!(
            clean_filename(Some("invoice\u{202E}fdp.exe"), "f"),
            "invoicefdp.exe"
        );
        assert_eq!(clean_filename(None, "file"), "file");
        assert_eq!(clean_filename(Some(&"x".repeat(300)), "f").len(), 255);
    }

    #[test]
    fn content_types_that_are_not_types_become_octet_stream() {
        assert_eq!(clean_content_type(Some("audio/wav")), "audio/wav");
        assert_eq!(
            clean_content_type(Some("nonsense")),
            "application/octet-stream"
        );
        assert_eq!(clean_content_type(None), "application/octet-stream");
    }
}
