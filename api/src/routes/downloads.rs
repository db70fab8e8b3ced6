//! Downloading a job's result and files: `GET /jobs/{id}/download` streams the worker's result
//! file, or answers the JSON result as a file, or, when the result is a transcript, renders it
//! with `format=txt|srt|vtt|json` (`herald_domain::transcript`); `GET /jobs/{id}/files/{id}`
//! streams any input or result file. Single byte ranges are honoured (`ranges`). An expired
//! job's downloads are gone (410). `GET /export/formats` lists the formats.

use std::sync::Arc;

use herald_domain::job::JobState;
use herald_domain::transcript::{Transcript, FORMATS};
use herald_domain::{FileRef, Scope};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Json, Response};
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ranges::{self, Download};
use super::ApiTags;
use crate::app::jobs as app;
use crate::auth::Credentials;
use crate::http::problem::{ApiError, ApiResult};
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
    /// The result of a succeeded job as a file: the worker's result file when it attached any
    /// (choose one with `file=` its id or name; the first otherwise), else the JSON result; or,
    /// when the result is a transcript (`{"segments": [{"start", "end", "text"}],
    /// "language"}`), rendered as `format=txt`, `srt`, `vtt` or `json`. Honours a single
    /// `Range: bytes=…` (206, or 416 outside the file). 409 before the job succeeded, 410 once
    /// it expired, 422 when a format is asked of a result that is not a transcript. Scope
    /// `jobs:read`.
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
        file: Query<Option<String>>,
        #[oai(name = "Range")] range_header: Header<Option<String>>,
    ) -> ApiResult<Response<Download>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        refuse_expired(&job)?;
        let Some(result) = job.result.as_ref() else {
            return Err(ApiError::Conflict {
                code: "JOB_NOT_SUCCEEDED",
                detail: format!("the job is {}, it has no result", job.status.as_str()),
            }
            .into());
        };
        let range = range_header.0.as_deref();
        let Some(asked) = format.0.as_deref() else {
            if let Some(stored) = pick(&job.result_files, file.0.as_deref())? {
                return Ok(ranges::from_storage(&self.state, stored, range).await?);
            }
            let bytes = serde_json::to_vec_pretty(result)
                .map_err(|e| ApiError::internal(anyhow::Error::new(e)))?;
            let name = format!("job-{}.json", id.0);
            return Ok(ranges::from_memory(bytes, "application/json", &name, range));
        };
        let Some((_, mime, extension, _)) = FORMATS.iter().find(|f| f.0 == asked) else {
            return Err(ApiError::field("format", "must be one of txt, srt, vtt, json").into());
        };
        let transcript = Transcript::from_result(result).ok_or(ApiError::Unprocessable {
            code: "RESULT_NOT_A_TRANSCRIPT",
            detail: "the job's result has no `segments` of start, end and text to render".into(),
        })?;
        let rendered = transcript.render(asked).unwrap_or_default();
        let name = format!("job-{}.{extension}", id.0);
        Ok(ranges::from_memory(
            rendered.into_bytes(),
            mime,
            &name,
            range,
        ))
    }

    /// Download one of a job's files
    ///
    /// An input or result file of the job (`input_files`, `result_files`), streamed with its
    /// content type and name; honours a single `Range`. 410 once the job expired. Scope
    /// `jobs:read` or `jobs:work` (workers fetch their input here).
    #[oai(
        path = "/jobs/:id/files/:file_id",
        method = "get",
        operation_id = "downloadJobFile"
    )]
    async fn file(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        file_id: Path<Uuid>,
        #[oai(name = "Range")] range_header: Header<Option<String>>,
    ) -> ApiResult<Response<Download>> {
        let caller = self
            .state
            .authorize_either(&auth, Scope::JobsRead, Scope::JobsWork)
            .await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        refuse_expired(&job)?;
        let stored = job
            .input_files
            .iter()
            .chain(&job.result_files)
            .find(|f| f.id == file_id.0)
            .ok_or_else(|| ApiError::not_found("file"))?;
        Ok(ranges::from_storage(&self.state, stored, range_header.0.as_deref()).await?)
    }
}

fn refuse_expired(job: &JobState) -> Result<(), ApiError> {
    match job.expired_at {
        Some(at) => Err(ApiError::Gone {
            code: "JOB_EXPIRED",
            detail: format!("the job's result and files expired at {at}"),
        }),
        None => Ok(()),
    }
}

/// The result file `asked` for (by id or name), the first when none is asked for, `None` when
/// the job has no result files.
fn pick<'a>(files: &'a [FileRef], asked: Option<&str>) -> Result<Option<&'a FileRef>, ApiError> {
    match asked {
        None => Ok(files.first()),
        Some(asked) => files
            .iter()
            .find(|f| f.id.to_string() == asked || f.filename == asked)
            .map(Some)
            .ok_or_else(|| ApiError::field("file", "no result file with this id or name")),
    }
}
