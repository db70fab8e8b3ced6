//! `/api/v1/jobs`: submit, list, read, cancel, annotate, review, delete, and read history.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::job::{parse_text, JobCommand, MetadataPatch};
use herald_domain::{ProjectId, Scope};
use herald_projections::jobs::{JobCursor, JobFilter, SortOrder};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, OpenApi};
use uuid::Uuid;

use super::audit_filters::within_years;
use super::history::HistoryList;
use super::job_forms::JobForm;
use super::job_models::*;
use super::job_submit as submit;
use super::ApiTags;
use crate::app::jobs as app;
use crate::auth::Credentials;
use crate::http::context::RequestContext;
use crate::http::cursor;
use crate::http::json_body::JsonBody;
use crate::http::payloads::JsonOrForm;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

pub struct JobsApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum SubmitResponse {
    /// The job is queued; `Location` is its URL.
    #[oai(status = 202)]
    Accepted(Json<JobDto>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The job is deleted; its history stays for auditors.
    #[oai(status = 204)]
    NoContent,
}

#[derive(Debug, Clone, Copy, Enum)]
pub enum JobSort {
    /// Oldest first.
    #[oai(rename = "created_at")]
    CreatedAt,
    /// Newest first (default).
    #[oai(rename = "-created_at")]
    CreatedAtDesc,
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submit a job
    ///
    /// Queues a job and answers 202 with it; `Location` is the job's URL. The input may name a
    /// completed upload (`"input": {"upload_id": "..."}`), or the job may be sent as
    /// `multipart/form-data` with its input file in a `file` part (up to
    /// `uploads.max_multipart_bytes`, 25 MiB) and the other fields as text. Scope `jobs:write`.
    #[oai(path = "/jobs", method = "post", operation_id = "submitJob")]
    async fn submit(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonOrForm<JobCreate, JobForm>,
    ) -> ApiResult<SubmitResponse> {
        let caller = self.state.authorize(&auth, Scope::JobsWrite).await?;
        let (id, job) = submit::submit(&self.state, &caller, context, body).await?;
        let dto = JobDto::render(id.as_uuid(), &job, app::retention(&self.state));
        Ok(SubmitResponse::Accepted(
            Json(dto),
            format!("/api/v1/jobs/{id}"),
        ))
    }

    /// List jobs
    ///
    /// Newest first by default; filter by status, kind and creation time; page with `cursor`.
    /// Lists come from the jobs read model and may lag a write by the projection lag
    /// (normally milliseconds). Scope `jobs:read`.
    #[oai(path = "/jobs", method = "get", operation_id = "listJobs")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Credentials,
        status: Query<Option<JobStatusDto>>,
        kind: Query<Option<String>>,
        created_after: Query<Option<DateTime<Utc>>>,
        created_before: Query<Option<DateTime<Utc>>>,
        sort: Query<Option<JobSort>>,
        /// 1–100, default 20.
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<JobList>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let limit = cursor::limit(limit.0)?;
        let after: Option<JobCursor> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let ascending = matches!(sort.0, Some(JobSort::CreatedAt));
        if after.is_some_and(|after| after.ascending != ascending) {
            return Err(ApiError::field(
                "cursor",
                "this cursor pages in the other `sort`: ask with the sort it came from",
            )
            .into());
        }
        for (field, at) in [
            ("created_after", created_after.0),
            ("created_before", created_before.0),
        ] {
            within_years(field, at)?;
        }
        if let (Some(after), Some(before)) = (created_after.0, created_before.0) {
            if after > before {
                return Err(ApiError::field(
                    "created_before",
                    "must not be before `created_after`",
                )
                .into());
            }
        }
        let filter = JobFilter {
            projects: caller.visible_projects(),
            status: status.0.map(|s| s.as_str().to_owned()),
            kind: kind.0,
            created_after: created_after.0,
            created_before: created_before.0,
            sort: if ascending {
                SortOrder::CreatedAsc
            } else {
                SortOrder::CreatedDesc
            },
            after,
            limit: limit + 1,
        };
        let mut rows = herald_projections::jobs::list(&self.state.pool, &filter).await?;
        let has_more = cursor::page(&mut rows, limit);
        let next_cursor = has_more.then(|| rows.last()).flatten().map(|last| {
            cursor::encode(&JobCursor {
                created_at: last.state.created_at,
                id: last.id,
                ascending,
            })
        });
        let retention = app::retention(&self.state);
        let data = rows
            .iter()
            .map(|row| JobDto::render(row.id, &row.state, retention))
            .collect();
        Ok(Json(JobList {
            data,
            has_more,
            next_cursor,
        }))
    }

    /// Get a job
    ///
    /// Always reflects the caller's own earlier writes. Scope `jobs:read`.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "getJob")]
    async fn get(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<JobDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        Ok(Json(JobDto::render(
            id.0,
            &job,
            app::retention(&self.state),
        )))
    }

    /// Get a job's progress
    #[oai(
        path = "/jobs/:id/progress",
        method = "get",
        operation_id = "getJobProgress"
    )]
    async fn progress(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<JobProgressDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        Ok(Json(JobProgressDto {
            status: job.status.into(),
            percent: job.progress.percent.value(),
            stage: job.progress.stage,
            message: job.progress.message,
        }))
    }

    /// Get a succeeded job's result
    ///
    /// 409 `JOB_NOT_SUCCEEDED` until the job has succeeded.
    #[oai(
        path = "/jobs/:id/result",
        method = "get",
        operation_id = "getJobResult"
    )]
    async fn result(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<JobResultDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let job = app::load(&self.state, &caller, id.0).await?;
        match job.result {
            Some(result) => Ok(Json(JobResultDto { id: id.0, result })),
            None => Err(ApiError::Conflict {
                code: "JOB_NOT_SUCCEEDED",
                detail: format!("the job is {}, it has no result", job.status.as_str()),
            }
            .into()),
        }
    }

    /// Get a job's history
    ///
    /// Every event of the job, oldest first, with who caused it. With
    /// `Accept: text/event-stream` the events are streamed instead (server-sent events: the
    /// history, then each new event as it happens, the global position as the SSE id; with
    /// `Last-Event-ID`, only the events after that one).
    #[oai(
        path = "/jobs/:id/events",
        method = "get",
        operation_id = "listJobEvents"
    )]
    async fn events(
        &self,
        auth: Credentials,
        id: Path<Uuid>,
        request: &poem::Request,
    ) -> ApiResult<JobHistory> {
        let caller = self.state.authorize(&auth, Scope::JobsRead).await?;
        let history =
            herald_store::log::aggregate_history(&self.state.pool, "job", &id.0.to_string())
                .await?;
        let project = history
            .first()
            .and_then(|e| e.project_id)
            .map(ProjectId::from_uuid);
        let project = match project {
            Some(project) if caller.can_see(project) => project,
            _ => return Err(app::not_found().into()),
        };
        caller.require_in(project)?;
        let streamed = request
            .header("accept")
            .is_some_and(|accept| accept.contains("text/event-stream"));
        if !streamed {
            return Ok(JobHistory::Ok(HistoryBody::Json(Json(
                HistoryList::render(history),
            ))));
        }
        // Resume after the event the client saw last, which must be one of this job's.
        let after = match request.header("last-event-id").map(str::trim) {
            None | Some("") => 0,
            Some(last) => history
                .iter()
                .find(|e| last.parse() == Ok(e.global_position))
                .map(|e| e.sequence)
                .ok_or_else(|| {
                    ApiError::field("Last-Event-ID", "not the id of one of this job's events")
                })?,
        };
        let listener = super::listener::Listener::of(&auth);
        let stream = super::streams::job(self.state.clone(), listener, (id.0, project), after);
        Ok(JobHistory::Ok(HistoryBody::Stream(super::events::sse(
            stream,
        ))))
    }

    /// Cancel a job
    ///
    /// A queued job is cancelled at once; a running job's worker learns it at its next
    /// heartbeat. 409 for a finished job. Scope `jobs:write`.
    #[oai(path = "/jobs/:id/cancel", method = "post", operation_id = "cancelJob")]
    async fn cancel(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
    ) -> ApiResult<Json<JobDto>> {
        self.write(auth, context, id.0, JobCommand::Cancel { now: Utc::now() })
            .await
    }

    /// Update a job's metadata
    ///
    /// Merges the given keys; a `null` value removes a key. A patch that changes nothing
    /// records nothing (no `job.metadata_updated`). Scope `jobs:write`.
    #[oai(
        path = "/jobs/:id/metadata",
        method = "patch",
        operation_id = "updateJobMetadata"
    )]
    async fn update_metadata(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<MetadataUpdate>,
    ) -> ApiResult<Json<JobDto>> {
        let patch = MetadataPatch::parse(body.0.metadata)?;
        let command = JobCommand::UpdateMetadata {
            patch,
            now: Utc::now(),
        };
        self.write(auth, context, id.0, command).await
    }

    /// Approve a succeeded job
    #[oai(
        path = "/jobs/:id/approve",
        method = "post",
        operation_id = "approveJob"
    )]
    async fn approve(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<ReviewRequest>,
    ) -> ApiResult<Json<JobDto>> {
        let command = JobCommand::Approve {
            comment: parse_text("comment", body.0.comment, 1000)?,
            now: Utc::now(),
        };
        self.write(auth, context, id.0, command).await
    }

    /// Reject a succeeded job
    #[oai(path = "/jobs/:id/reject", method = "post", operation_id = "rejectJob")]
    async fn reject(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<ReviewRequest>,
    ) -> ApiResult<Json<JobDto>> {
        let command = JobCommand::Reject {
            comment: parse_text("comment", body.0.comment, 1000)?,
            now: Utc::now(),
        };
        self.write(auth, context, id.0, command).await
    }

    /// Delete a job
    ///
    /// Hides the job from every read and removes its files at once; its history stays for
    /// auditors. A running job must be cancelled first. Scope `jobs:write`.
    #[oai(path = "/jobs/:id", method = "delete", operation_id = "deleteJob")]
    async fn delete(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        self.write(auth, context, id.0, JobCommand::Delete { now: Utc::now() })
            .await?;
        // The job is deleted: bytes the object store would not remove now are retried by the
        // janitor, so they do not turn this answer into an error.
        if let Err(error) = crate::files::janitor::remove_job_files(&self.state, id.0).await {
            tracing::warn!(job = %id.0, error = format!("{error:#}"), "could not remove a deleted job's files");
        }
        Ok(Deleted::NoContent)
    }
}

impl JobsApi {
    async fn write(
        &self,
        auth: Credentials,
        context: &RequestContext,
        id: Uuid,
        command: JobCommand,
    ) -> ApiResult<Json<JobDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsWrite).await?;
        let job = app::execute(
            &self.state,
            &caller,
            &metadata(&caller, context),
            id,
            command,
        )
        .await?;
        Ok(Json(JobDto::render(id, &job, app::retention(&self.state))))
    }
}

/// A job's history: JSON, or a stream of server-sent events.
#[derive(poem_openapi::ResponseContent)]
pub enum HistoryBody {
    Json(Json<HistoryList>),
    Stream(super::events::LogEventStream),
}

#[derive(ApiResponse)]
pub enum JobHistory {
    /// The job's events.
    #[oai(status = 200)]
    Ok(HistoryBody),
}
