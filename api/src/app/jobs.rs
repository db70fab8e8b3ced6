//! Job commands and reads on behalf of a caller.

use chrono::Duration;
use herald_domain::job::{Job, JobCommand, JobError, JobState};
use herald_domain::JobId;
use herald_store::{CommandError, EventMetadata};
use uuid::Uuid;

use crate::auth::Caller;
use crate::http::problem::ApiError;
use crate::state::AppState;

impl From<CommandError<JobError>> for ApiError {
    fn from(error: CommandError<JobError>) -> Self {
        match error {
            CommandError::Rejected(JobError::Invalid(field)) => ApiError::Validation(vec![field]),
            CommandError::Rejected(JobError::NotFound) => not_found(),
            CommandError::Rejected(rejected) => ApiError::Conflict {
                code: rejected.code(),
                detail: rejected.to_string(),
            },
            CommandError::Conflict => ApiError::Conflict {
                code: "CONCURRENT_MODIFICATION",
                detail: "the job was changed concurrently; retry the request".into(),
            },
            CommandError::Store(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

pub fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "JOB_NOT_FOUND",
        detail: "job not found".into(),
    }
}

/// Runs a command on a job the caller can see, and returns the job as the command left it.
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    metadata: &EventMetadata,
    id: Uuid,
    command: JobCommand,
) -> Result<JobState, ApiError> {
    if caller.is_member() {
        // A member's power depends on the job's project, which never changes: check it first.
        load(state, caller, id).await?;
    }
    let retry = command.retry_on_conflict();
    // The command acts in the job's project: the request log records it there (a member's
    // role in it was checked above).
    let visible = |job: &Job| match job.state() {
        Some(state) if caller.can_see(state.project_id) => {
            crate::http::context::note_project(state.project_id.as_uuid());
            Ok(())
        }
        _ => Err(JobError::NotFound),
    };
    let committed = state
        .jobs
        .execute_guarded(&id.to_string(), command, metadata, retry, visible)
        .await?;
    committed.aggregate.state().cloned().ok_or_else(not_found)
}

/// Submits a new job (the id is generated here, so there is nothing to conflict with).
pub async fn submit(
    state: &AppState,
    id: JobId,
    metadata: &EventMetadata,
    command: JobCommand,
) -> Result<(JobId, JobState), ApiError> {
    let committed = state
        .jobs
        .create(&id.to_string(), command, metadata)
        .await?;
    let job = committed.aggregate.state().cloned().ok_or_else(not_found)?;
    Ok((id, job))
}

/// A job by id, reflecting every committed write (read-your-writes): the read model answers
/// when it has caught up with the job's latest event, otherwise the job is folded from the log.
pub async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<JobState, ApiError> {
    let (row, log_version) = herald_projections::jobs::get(&state.pool, id).await?;
    let job = match row {
        Some(row) if row.version >= log_version => row.state,
        _ if log_version == 0 => return Err(not_found()),
        _ => {
            let (aggregate, _) = state.jobs.load(&id.to_string()).await?;
            aggregate.state().cloned().ok_or_else(not_found)?
        }
    };
    if job.deleted || !caller.can_see(job.project_id) {
        return Err(not_found());
    }
    caller.require_in(job.project_id)?;
    Ok(job)
}

pub fn retention(state: &AppState) -> Duration {
    Duration::hours(i64::from(state.config.jobs.retention_hours))
}
