//! Downloading a job's result: `GET /jobs/{id}/download` answers the JSON result as a file, or,
//! when the result is a transcript, renders it with `format=txt|srt|vtt|json`
//! (`herald_domain::transcript`); single byte ranges are honoured. An expired job's download is
//! gone (410). `GET /export/formats` lists the formats.

use std::sync::Arc;

use herald_domain::transcript::{Transcript, FORMATS};
use herald_domain::Scope;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json, Response};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::app::jobs as app;
use crate::auth::Credentials;
use crate::http::problem::{ApiError, ApiResult, Problem};
use crate::state::AppState;

pub struct DownloadsApi {
    pub state: Arc<AppState>,
}

#[derive(Debug, Object)]
pub struct FormatDto {
    /// The `format` parameter's value.
    pub name: String,
    pub mime_type: String,
    pub extension: String,
    pub description: String,
}

#[derive(Debug, Object)]
pub struct FormatList {
    pub data: Vec<FormatDto>,
}

#[derive(ApiResponse)]
pub enum Download {
    /// The whole file (`Content-Type` is the format's).
    #[oai(status = 200)]
    Full(
        Binary<Vec<u8>>,
        #[oai(header = "Content-Disposition")] String,
        #[oai(header = "Accept-Ranges")] String,
    ),
    /// The bytes asked for with `Range`.
    #[oai(status = 206)]
    Partial(
        Binary<Vec<u8>>,
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

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Jobs")]
impl DownloadsApi {
    /// List download formats
    ///
    /// The `format` values of `GET /jobs/{id}/download` for transcript results, with their MIME
    /// types.
    #[oai(
        path = "/export/formats",
        method = "get",
        operation_id = "listExportFormats"
    )]
    async fn formats(&self, auth: Credentials) -> ApiResult<Json<FormatList>> {
        self.state.authenticate(&auth).await?;
        let data = FORMATS
            .iter()
            .map(|(name, mime, extension, description)| FormatDto {
                name: (*name).into(),
                mime_type: (*mime).into(),
                extension: (*extension).into(),
                description: (*description).into(),
            })
            .collect();
        Ok(Json(FormatList { data }))
    }

    /// Download a job's result
    ///
    /// The result of a succeeded job as a file: its JSON, or, when the result is a transcript
    /// (`{"segments": [{"start", "end", "text"}], "language"}`), rendered as `format=txt`,
    /// `srt`, `vtt` or `json`. Honours a single `Range: bytes=…` (206, or 416 outside the
    /// file). 409 before the job succeeded, 410 once it expired, 422 when a format is asked of
    /// a result that is not a transcript. Scope `jobs:read`.
    #[oai(
        path = "/jobs/:id/download",
        method = "get",
        operation_id = "downloadJobResult"
    )]
    async fn download(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        format: Query<Option<String>>,
        #[oai(name = "Range")] range_header: Header<Option<String>>,
    ) -> ApiResult<Response<Download>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        if let Some(at) = job.expired_at {
            return Err(ApiError::Gone {
                code: "JOB_EXPIRED",
                detail: format!("the job's result expired at {at}"),
            }
            .into());
        }
        let Some(result) = job.result.as_ref() else {
            return Err(ApiError::Conflict {
                code: "JOB_NOT_SUCCEEDED",
                detail: format!("the job is {}, it has no result", job.status.as_str()),
            }
            .into());
        };
        let (bytes, mime, extension) = match format.0.as_deref() {
            None => (
                serde_json::to_vec_pretty(result)
                    .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?,
                "application/json",
                "json",
            ),
            Some(asked) => {
                let Some((_, mime, extension, _)) = FORMATS.iter().find(|f| f.0 == asked) else {
                    return Err(
                        ApiError::field("format", "must be one of txt, srt, vtt, json").into(),
                    );
                };
                let transcript =
                    Transcript::from_result(result).ok_or(ApiError::Unprocessable {
                        code: "RESULT_NOT_A_TRANSCRIPT",
                        detail:
                            "the job's result has no `segments` of start, end and text to render"
                                .into(),
                    })?;
                let rendered = transcript.render(asked).unwrap_or_default();
                (rendered.into_bytes(), *mime, *extension)
            }
        };
        let disposition = format!("attachment; filename=\"job-{}.{extension}\"", id.0);
        let len = bytes.len();
        let answer = match range(range_header.0.as_deref(), len) {
            None => Download::Full(Binary(bytes), disposition, "bytes".into()),
            Some(Ok((first, last))) => Download::Partial(
                Binary(bytes[first..=last].to_vec()),
                disposition,
                format!("bytes {first}-{last}/{len}"),
            ),
            Some(Err(())) => {
                let problem = Problem::new(
                    poem::http::StatusCode::RANGE_NOT_SATISFIABLE,
                    "RANGE_NOT_SATISFIABLE",
                    format!("the file has {len} bytes"),
                );
                return Ok(Response::new(Download::Unsatisfiable(
                    Json(problem),
                    format!("bytes */{len}"),
                )));
            }
        };
        Ok(Response::new(answer).header("Content-Type", mime))
    }
}

#[cfg(test)]
mod tests {
    use super::range;

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
