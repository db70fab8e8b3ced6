//! Answering with bytes: a whole file or one `Range`, from memory (a rendered transcript, a
//! JSON result) or streamed from storage (a stored file, never read whole). One response type,
//! `Download`, serves `GET /jobs/{id}/download` and `GET /jobs/{id}/files/{file_id}`.

use herald_domain::FileRef;
use poem::Body;
use poem_openapi::payload::{Binary, Json, Response};
use poem_openapi::ApiResponse;

use crate::http::problem::{ApiError, Problem};
use crate::state::AppState;
use crate::storage::{file_key, StorageError};

#[derive(ApiResponse)]
pub enum Download {
    /// The whole file (`Content-Type` is the format's).
    #[oai(status = 200)]
    Full(
        Binary<Body>,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The bytes asked for with `Range`.
    #[oai(status = 206)]
    Partial(
        Binary<Body>,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "Content-Range")] String,
    ),
    /// The range lies outside the file (`RANGE_NOT_SATISFIABLE`).
    #[oai(status = 416, content_type = "application/problem+json")]
    Unsatisfiable(Json<Problem>, #[oai(header = "Content-Range")] String),
}

/// A single `bytes=` range of a `len`-byte file: `Some(Ok((first, last)))`, `Some(Err(()))`
/// when it cannot be satisfied, `None` when absent or not one simple range (the whole file).
fn range(header: Option<&str>, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let bounds = match (first.is_empty(), last.is_empty()) {
        (true, false) => {
            let suffix: usize = last.parse().ok()?;
            (len.saturating_sub(suffix), len.checked_sub(1))
        }
        (false, _) => {
            let first: usize = first.parse().ok()?;
            let last = if last.is_empty() {
                len.checked_sub(1)
            } else {
                Some(last.parse::<usize>().ok()?.min(len.saturating_sub(1)))
            };
            (first, last)
        }
        (true, true) => return None,
    };
    match bounds {
        (first, Some(last)) if first <= last && first < len => Some(Ok((first, last))),
        _ => Some(Err(())),
    }
}

/// `attachment; filename="…"`, plus an RFC 5987 `filename*` when the name is not plain ASCII.
fn disposition(filename: &str) -> String {
    let plain = |c: char| (c.is_ascii_graphic() || c == ' ') && c != '"' && c != '\\';
    let ascii: String = filename
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    if filename.chars().all(plain) {
        return format!("attachment; filename=\"{ascii}\"");
    }
    let encoded: String = filename
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn unsatisfiable(len: u64) -> Response<Download> {
    let problem = Problem::new(
        poem::http::StatusCode::RANGE_NOT_SATISFIABLE,
        "RANGE_NOT_SATISFIABLE",
        format!("the file has {len} bytes"),
    );
    Response::new(Download::Unsatisfiable(
        Json(problem),
        format!("bytes */{len}"),
    ))
}

/// Answers bytes held in memory (the whole, or the range asked for).
pub fn from_memory(
    bytes: Vec<u8>,
    mime: &str,
    filename: &str,
    range_header: Option<&str>,
) -> Response<Download> {
    let len = bytes.len();
    let disposition = disposition(filename);
    let answer = match range(range_header, len) {
        None => Download::Full(Binary(Body::from_vec(bytes)), disposition, "bytes".into()),
        Some(Ok((first, last))) => Download::Partial(
            Binary(Body::from_vec(bytes[first..=last].to_vec())),
            disposition,
            format!("bytes {first}-{last}/{len}"),
        ),
        Some(Err(())) => return unsatisfiable(len as u64),
    };
    Response::new(answer).header("Content-Type", mime)
}

/// Streams a stored file (the whole, or the range asked for). 410 `FILE_GONE` when its bytes
/// have been removed.
pub async fn from_storage(
    state: &AppState,
    file: &FileRef,
    range_header: Option<&str>,
) -> Result<Response<Download>, ApiError> {
    let len = file.size;
    let asked = match range(range_header, len as usize) {
        Some(Err(())) => return Ok(unsatisfiable(len)),
        Some(Ok((first, last))) => Some((first as u64, last as u64)),
        None => None,
    };
    let reading = state
        .storage
        .read(
            &file_key(file.id),
            asked.map(|(first, last)| first..last + 1),
        )
        .await;
    let reading = match reading {
        Ok(reading) => reading,
        Err(StorageError::NotFound) => {
            return Err(ApiError::Gone {
                code: "FILE_GONE",
                detail: format!("the bytes of {} have been removed", file.filename),
            })
        }
        Err(error) => return Err(ApiError::internal(error)),
    };
    let body = Body::from_bytes_stream(reading.bytes);
    let disposition = disposition(&file.filename);
    let answer = match asked {
        None => Download::Full(Binary(body), disposition, "bytes".into()),
        Some((first, last)) => Download::Partial(
            Binary(body),
            disposition,
            format!("bytes {first}-{last}/{len}"),
        ),
    };
    let length = asked.map_or(len, |(first, last)| last - first + 1);
    Ok(Response::new(answer)
        .header("Content-Type", file.content_type.as_str())
        .header("Content-Length", length.to_string()))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn file_names_are_quoted_and_encoded_when_they_are_not_plain_ascii() {
        use super::disposition;
        assert_eq!(disposition("talk.srt"), "attachment; filename=\"talk.srt\"");
        assert_eq!(
            disposition("résumé \"v2\".pdf"),
            "attachment; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
    }

    #[test]
    fn single_ranges_are_read_and_others_mean_the_whole_file() {
        assert_eq!(range(Some("bytes=0-9"), 100), Some(Ok((0, 9))));
        assert_eq!(range(Some("bytes=90-"), 100), Some(Ok((90, 99))));
        assert_eq!(range(Some("bytes=-10"), 100), Some(Ok((90, 99))));
        assert_eq!(range(Some("bytes=95-200"), 100), Some(Ok((95, 99))));
        assert_eq!(range(Some("bytes=100-"), 100), Some(Err(())));
        assert_eq!(range(Some("bytes=5-2"), 100), Some(Err(())));
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), None);
        assert_eq!(range(Some("items=0-1"), 100), None);
        assert_eq!(range(None, 100), None);
    }
}
