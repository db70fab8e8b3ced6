//! Submitting a job (`POST /jobs`): the JSON body or the multipart form is parsed into a
//! `SubmitJob`, the project is checked, the input file (a form's `file` part, or the upload
//! the input names) is claimed for the new job, and the command is run; a refused command
//! releases the file.

use std::sync::Arc;

use chrono::Utc;
use herald_domain::job::{
    JobCommand, JobKind, JobState, MaxAttempts, Metadata, Priority, SubmitJob,
};
use herald_domain::{FieldError, JobId};
use uuid::Uuid;

use super::job_forms::{self as forms, JobForm};
use super::job_models::JobCreate;
use crate::app::jobs as app;
use crate::auth::Caller;
use crate::http::context::RequestContext;
use crate::http::payloads::JsonOrForm;
use crate::http::problem::ApiError;
use crate::state::{metadata, AppState};

pub async fn submit(
    state: &Arc<AppState>,
    caller: &Caller,
    context: &RequestContext,
    body: JsonOrForm<JobCreate, JobForm>,
) -> Result<(JobId, JobState), ApiError> {
    let (create, part) = match body {
        JsonOrForm::Json(create) => (create, None),
        JsonOrForm::Form(form) => {
            let (create, part) = form.split(state.config.http.max_body_bytes)?;
            (create, Some(part))
        }
    };
    let named = forms::named_upload(create.input.as_ref())?;
    let mut submit = parse_submit(create, caller)?;
    if caller.project_id().is_none() {
        // Loaded from the log, not the read model, so a project created a moment ago counts.
        // A project the caller cannot see is as unknown as one that does not exist.
        let (project, _) = state
            .projects
            .load(&submit.project_id.to_string())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        if project.state().is_none() || !caller.can_see(submit.project_id) {
            return Err(ApiError::field("project_id", "no such project"));
        }
        caller.require_in(submit.project_id)?;
    }
    let upload = match part {
        Some(part) => {
            let stored = forms::store_parts(state, caller, submit.project_id, vec![part]).await?;
            let id = stored[0];
            if let Some(input) = submit.input.as_object_mut() {
                input.insert("upload_id".into(), serde_json::json!(id));
            }
            Some(id)
        }
        None => named,
    };
    let id = JobId::generate();
    let claimed: Vec<Uuid> = upload.into_iter().collect();
    let (state, metadata) = (state.clone(), metadata(caller, context));
    // Claim and command run as a task of their own: a client that hangs up between the two
    // must not leave a file claimed by a job that was never recorded.
    let task = tokio::spawn(async move {
        let (project, job) = (submit.project_id, id.as_uuid());
        let field = "input.upload_id";
        submit.input_files = forms::claim(&state, &claimed, project, job, "input", field).await?;
        let command = JobCommand::Submit(submit, Utc::now());
        let submitted = app::submit(&state, id, &metadata, command).await;
        if let Err(error) = &submitted {
            forms::release(&state, &claimed, error).await;
        }
        submitted
    });
    task.await.map_err(ApiError::internal)?
}

fn parse_submit(body: JobCreate, caller: &Caller) -> Result<SubmitJob, ApiError> {
    let mut errors = Vec::new();
    let mut check = |r: Result<(), FieldError>| {
        if let Err(e) = r {
            errors.push(e)
        }
    };
    let kind = JobKind::parse(&body.kind);
    let priority = body
        .priority
        .map_or(Ok(Priority::default()), Priority::parse);
    let max_attempts = body
        .max_attempts
        .map_or(Ok(MaxAttempts::default()), MaxAttempts::parse);
    let metadata = Metadata::parse(body.metadata.unwrap_or_default());
    let project = caller.target_project(body.project_id);
    check(kind.as_ref().map(|_| ()).map_err(Clone::clone));
    check(priority.as_ref().map(|_| ()).map_err(Clone::clone));
    check(max_attempts.as_ref().map(|_| ()).map_err(Clone::clone));
    check(metadata.as_ref().map(|_| ()).map_err(Clone::clone));
    check(project.as_ref().map(|_| ()).map_err(Clone::clone));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(SubmitJob {
        project_id: project.expect("checked"),
        kind: kind.expect("checked"),
        input: body.input.unwrap_or_else(|| serde_json::json!({})),
        priority: priority.expect("checked"),
        metadata: metadata.expect("checked"),
        max_attempts: max_attempts.expect("checked"),
        input_files: Vec::new(),
    })
}
