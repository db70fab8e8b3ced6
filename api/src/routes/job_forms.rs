//! Jobs and results that come with files. `POST /jobs` and `POST /jobs/{id}/complete` take a
//! `multipart/form-data` form as well as JSON: the form's file parts are streamed to storage,
//! and its other fields are the JSON body's, as text. Either way, files are then *claimed* for
//! the job (a file serves one job), and the job's event records their `FileRef`s; if the
//! command is refused, the claim is released so the files can be used again.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use herald_domain::{FieldError, FileRef, ProjectId};
use poem_openapi::types::multipart::Upload;
use poem_openapi::Multipart;
use serde_json::Value;
use uuid::Uuid;

use super::job_models::{CompleteRequest, JobCreate};
use crate::auth::Caller;
use crate::files;
use crate::http::problem::ApiError;
use crate::state::AppState;

/// `POST /jobs` as `multipart/form-data`: the input file and the job's fields as text.
#[derive(Debug, Multipart)]
pub struct JobForm {
    /// The input file (the whole form at most `uploads.max_multipart_bytes` + 1 MiB, 26 MiB by
    /// default); the job's `input.upload_id` is set to its id.
    pub file: Upload,
    pub kind: String,
    /// A JSON object.
    pub input: Option<String>,
    pub priority: Option<i64>,
    pub max_attempts: Option<i64>,
    /// A JSON object of strings.
    pub metadata: Option<String>,
    pub project_id: Option<Uuid>,
}

/// `POST /jobs/{id}/complete` as `multipart/form-data`: result files and the JSON result.
#[derive(Debug, Multipart)]
pub struct CompleteForm {
    /// A JSON value.
    pub result: Option<String>,
    /// One or more result files.
    pub files: Vec<Upload>,
}

fn json_field<T: serde::de::DeserializeOwned>(
    field: &str,
    text: Option<String>,
) -> Result<Option<T>, ApiError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| ApiError::field(field, &format!("must be JSON: {e}")))
}

/// Text fields are held in memory, so they get the JSON bodies' limit (`http.max_body_bytes`).
fn check_text(limit: usize, fields: &[(&str, &Option<String>)]) -> Result<(), ApiError> {
    for (name, value) in fields {
        if value.as_ref().is_some_and(|v| v.len() > limit) {
            return Err(ApiError::field(
                name,
                &format!("must be at most {limit} bytes"),
            ));
        }
    }
    Ok(())
}

impl JobForm {
    /// The JSON body this form stands for, and its file.
    pub fn split(self, limit: usize) -> Result<(JobCreate, Upload), ApiError> {
        let kind = Some(self.kind.clone());
        check_text(
            limit,
            &[
                ("kind", &kind),
                ("input", &self.input),
                ("metadata", &self.metadata),
            ],
        )?;
        let input: Option<Value> = json_field("input", self.input)?;
        if input.as_ref().is_some_and(|i| !i.is_object()) {
            return Err(ApiError::field("input", "must be a JSON object"));
        }
        let metadata: Option<BTreeMap<String, String>> = json_field("metadata", self.metadata)?;
        let create = JobCreate {
            kind: self.kind,
            input,
            priority: self.priority,
            metadata,
            max_attempts: self.max_attempts,
            project_id: self.project_id,
        };
        Ok((create, self.file))
    }
}

impl CompleteForm {
    pub fn split(self, limit: usize) -> Result<(Option<Value>, Vec<Upload>), ApiError> {
        check_text(limit, &[("result", &self.result)])?;
        Ok((json_field("result", self.result)?, self.files))
    }
}

/// The upload a JSON job input names (`"input": {"upload_id": "..."}`), if any.
pub fn named_upload(input: Option<&Value>) -> Result<Option<Uuid>, ApiError> {
    match input.and_then(|i| i.get("upload_id")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => id
            .parse()
            .map(Some)
            .map_err(|_| ApiError::field("input.upload_id", "must be an upload id")),
        Some(_) => Err(ApiError::field("input.upload_id", "must be an upload id")),
    }
}

/// The uploads a JSON completion names (`"files": [{"upload_id": "..."}]`).
pub fn named_results(body: &CompleteRequest) -> Vec<Uuid> {
    body.files.iter().flatten().map(|f| f.upload_id).collect()
}

/// Stores form parts as files of `project` (not yet held by any job).
pub async fn store_parts(
    state: &AppState,
    caller: &Caller,
    project: ProjectId,
    parts: Vec<Upload>,
) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::with_capacity(parts.len());
    for part in parts {
        let file =
            files::intake::store_part(state, project.as_uuid(), &caller.rate_subject(), part)
                .await?;
        ids.push(file.id);
    }
    Ok(ids)
}

/// Claims `ids` for `job`, or explains which one cannot be used and why.
pub async fn claim(
    state: &AppState,
    ids: &[Uuid],
    project: ProjectId,
    job: Uuid,
    role: &str,
    field: &str,
) -> Result<Vec<FileRef>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(rows) = files::claim(&state.pool, ids, project.as_uuid(), job, role).await? {
        return Ok(rows.iter().map(files::FileRow::file_ref).collect());
    }
    for id in ids {
        let row = files::get(&state.pool, *id).await?;
        let Some(row) = row.filter(|r| r.project_id == project.as_uuid()) else {
            let message = format!("no upload {id} in the job's project");
            return Err(ApiError::Validation(vec![FieldError::new(field, message)]));
        };
        if row.state != "complete" {
            return Err(ApiError::Conflict {
                code: "UPLOAD_NOT_COMPLETE",
                detail: format!("upload {id} is {}, not complete", row.state),
            });
        }
        if row.job_id.is_some() {
            return Err(ApiError::Conflict {
                code: "UPLOAD_IN_USE",
                detail: format!("upload {id} already belongs to a job"),
            });
        }
    }
    Err(ApiError::Conflict {
        code: "UPLOAD_IN_USE",
        detail: "another request took one of the uploads at the same moment".into(),
    })
}

/// Gives claimed files back after the job's command was refused. When its outcome is unknown
/// (a database error: the command may have been recorded), the claim stays.
pub async fn release(state: &AppState, ids: &[Uuid], error: &ApiError) {
    if matches!(error, ApiError::Internal(_)) || ids.is_empty() {
        return;
    }
    let expires_at = Utc::now() + Duration::hours(state.config.uploads.expiry_hours.into());
    if let Err(error) = files::release(&state.pool, ids, expires_at).await {
        tracing::warn!(%error, "releasing the files of a refused command");
    }
}
