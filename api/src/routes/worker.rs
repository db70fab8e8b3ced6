//! Worker endpoints (scope `jobs:work`): lease a job, heartbeat with progress, complete, fail.

use std::sync::Arc;

use chrono::{Duration, Utc};
use herald_domain::job::{parse_text, JobCommand, Percent};
use herald_domain::Scope;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::job_forms::{self as forms, CompleteForm};
use super::job_models::*;
use super::ApiTags;
use crate::app::jobs as app;
use crate::auth::Credentials;
use crate::http::context::RequestContext;
use crate::http::json_body::JsonBody;
use crate::http::payloads::JsonOrForm;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

/// How many queued jobs one lease request tries before answering 204.
const LEASE_CANDIDATES: i64 = 16;

pub struct WorkerApi {
    pub state: Arc<AppState>,
}

// The 204 variant is empty; boxing the job would only add an allocation per lease.
#[allow(clippy::large_enum_variant)]
#[derive(ApiResponse)]
pub enum LeaseResponse {
    /// A job is now leased to the caller until `lease_expires_at`.
    #[oai(status = 200)]
    Leased(Json<JobDto>),
    /// Nothing is due.
    #[oai(status = 204)]
    NothingDue,
}

impl WorkerApi {
    fn lease_length(&self, asked: Option<i64>) -> Result<Duration, ApiError> {
        let config = &self.state.config.jobs;
        let seconds = asked.unwrap_or(i64::from(config.default_lease_seconds));
        if !(1..=i64::from(config.max_lease_seconds)).contains(&seconds) {
            return Err(ApiError::field(
                "lease_seconds",
                &format!("must be between 1 and {}", config.max_lease_seconds),
            ));
        }
        Ok(Duration::seconds(seconds))
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Workers")]
impl WorkerApi {
    /// Lease the next job
    ///
    /// Takes the highest-priority, oldest queued job of the given kinds (in the key's project)
    /// and leases it to the caller. 204 when nothing is due.
    #[oai(path = "/worker/lease", method = "post", operation_id = "leaseJob")]
    async fn lease(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<LeaseRequest>,
    ) -> ApiResult<LeaseResponse> {
        let caller = self.state.authorize(&auth, Scope::JobsWork).await?;
        let worker = caller.worker()?;
        let lease = self.lease_length(body.0.lease_seconds)?;
        let candidates = herald_projections::jobs::lease_candidates(
            &self.state.pool,
            caller.project_id().map(|p| p.as_uuid()),
            &body.0.kinds,
            LEASE_CANDIDATES,
        )
        .await?;
        let metadata = metadata(&caller, context);
        for id in candidates {
            let command = JobCommand::Lease {
                worker: worker.clone(),
                lease,
                now: Utc::now(),
            };
            match app::execute(&self.state, &caller, &metadata, id, command).await {
                Ok(job) => {
                    let retention = app::retention(&self.state);
                    return Ok(LeaseResponse::Leased(Json(JobDto::render(
                        id, &job, retention,
                    ))));
                }
                // Another worker won this one (or the read model lagged): try the next.
                Err(ApiError::Conflict { .. } | ApiError::NotFound { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Ok(LeaseResponse::NothingDue)
    }

    /// Heartbeat
    ///
    /// Reports progress and extends the lease: by `lease_seconds`, or as long as the lease was
    /// last taken or extended for. A field left out keeps the job's value, so `{}` only keeps
    /// the lease alive. `cancel_requested: true` means the job was cancelled: stop and do not
    /// complete it.
    #[oai(
        path = "/jobs/:id/heartbeat",
        method = "post",
        operation_id = "heartbeatJob"
    )]
    async fn heartbeat(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<HeartbeatRequest>,
    ) -> ApiResult<Json<HeartbeatResponse>> {
        let caller = self.state.authorize(&auth, Scope::JobsWork).await?;
        let body = body.0;
        let command = JobCommand::Heartbeat {
            worker: caller.worker()?,
            percent: body.progress.map(Percent::parse).transpose()?,
            // Given (an empty one clears it) or kept.
            stage: (body.stage.is_some())
                .then(|| parse_text("stage", body.stage, 100))
                .transpose()?,
            message: (body.message.is_some())
                .then(|| parse_text("message", body.message, 1000))
                .transpose()?,
            lease: (body.lease_seconds)
                .map(|asked| self.lease_length(Some(asked)))
                .transpose()?,
            max_lease: Duration::seconds(self.state.config.jobs.max_lease_seconds.into()),
            now: Utc::now(),
        };
        let job = app::execute(
            &self.state,
            &caller,
            &metadata(&caller, context),
            id.0,
            command,
        )
        .await?;
        Ok(Json(HeartbeatResponse {
            cancel_requested: job.cancel_requested,
            lease_expires_at: job
                .lease
                .filter(|_| !job.cancel_requested)
                .map(|l| l.expires_at),
        }))
    }

    /// Complete a job
    ///
    /// Records the result; the job succeeds. Only the lease holder may complete it. Result
    /// files come either as references to completed uploads (`"files": [{"upload_id": ...}]`)
    /// or as `multipart/form-data` with `files` parts and the `result` as JSON text.
    #[oai(
        path = "/jobs/:id/complete",
        method = "post",
        operation_id = "completeJob"
    )]
    async fn complete(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonOrForm<CompleteRequest, CompleteForm>,
    ) -> ApiResult<Json<JobDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsWork).await?;
        let worker = caller.worker()?;
        let (result, named, parts) = match body {
            JsonOrForm::Json(body) => {
                let named = forms::named_results(&body);
                (body.result, named, Vec::new())
            }
            JsonOrForm::Form(form) => {
                let (result, parts) = form.split(self.state.config.http.max_body_bytes)?;
                (result, Vec::new(), parts)
            }
        };
        let job = app::load(&self.state, &caller, id.0).await?;
        // Refused before any file is stored (the command checks again when it runs).
        job.check_completable(&worker, Utc::now())
            .map_err(|e| ApiError::from(herald_store::CommandError::Rejected(e)))?;
        let mut claimed = named;
        claimed.extend(forms::store_parts(&self.state, &caller, job.project_id, parts).await?);
        let (state, metadata) = (self.state.clone(), metadata(&caller, context));
        let (caller, job_id, project) = (caller.clone(), id.0, job.project_id);
        // Claim and command run as a task of their own (see `job_submit`).
        let task = tokio::spawn(async move {
            let files = forms::claim(&state, &claimed, project, job_id, "result", "files").await?;
            let command = JobCommand::Complete {
                worker,
                result: result.unwrap_or_else(|| serde_json::json!({})),
                files,
                now: Utc::now(),
            };
            let done = app::execute(&state, &caller, &metadata, job_id, command).await;
            if let Err(error) = &done {
                forms::release(&state, &claimed, error).await;
            }
            done
        });
        let job = task.await.map_err(ApiError::internal)??;
        Ok(Json(JobDto::render(
            id.0,
            &job,
            app::retention(&self.state),
        )))
    }

    /// Fail a job
    ///
    /// A retryable failure requeues the job while attempts remain; otherwise it fails.
    #[oai(path = "/jobs/:id/fail", method = "post", operation_id = "failJob")]
    async fn fail(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<FailRequest>,
    ) -> ApiResult<Json<JobDto>> {
        let caller = self.state.authorize(&auth, Scope::JobsWork).await?;
        let error = parse_text("error", Some(body.0.error), 2000)?
            .ok_or_else(|| ApiError::field("error", "must not be empty"))?;
        let command = JobCommand::Fail {
            worker: caller.worker()?,
            error,
            retryable: body.0.retryable.unwrap_or(true),
            now: Utc::now(),
        };
        let job = app::execute(
            &self.state,
            &caller,
            &metadata(&caller, context),
            id.0,
            command,
        )
        .await?;
        Ok(Json(JobDto::render(
            id.0,
            &job,
            app::retention(&self.state),
        )))
    }
}
