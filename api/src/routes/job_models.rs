//! Request and response bodies of the jobs and worker endpoints, and the mapping from the
//! domain's `JobState` to the public job shape (DESIGN §4).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use herald_domain::job::{JobState, JobStatus, ReviewDecision};
use poem_openapi::{Enum, Object};
use serde_json::Value;
use uuid::Uuid;

use super::upload_models::FileDto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum JobStatusDto {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<JobStatus> for JobStatusDto {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => JobStatusDto::Queued,
            JobStatus::Running => JobStatusDto::Running,
            JobStatus::Succeeded => JobStatusDto::Succeeded,
            JobStatus::Failed => JobStatusDto::Failed,
            JobStatus::Cancelled => JobStatusDto::Cancelled,
        }
    }
}

impl JobStatusDto {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatusDto::Queued => "queued",
            JobStatusDto::Running => "running",
            JobStatusDto::Succeeded => "succeeded",
            JobStatusDto::Failed => "failed",
            JobStatusDto::Cancelled => "cancelled",
        }
    }
}

/// `POST /jobs` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct JobCreate {
    /// What kind of work this is, e.g. `captions.generate`.
    pub kind: String,
    /// Free-form input for the worker.
    #[oai(nullable, default)]
    pub input: Option<Value>,
    /// 0 (lowest) to 9 (highest); default 5.
    #[oai(nullable)]
    pub priority: Option<i64>,
    /// String labels (at most 50 keys).
    #[oai(nullable, default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Starts allowed before the job fails for good; default 3.
    #[oai(nullable)]
    pub max_attempts: Option<i64>,
    /// Required for keys not bound to one project; otherwise must be the key's project.
    #[oai(nullable)]
    pub project_id: Option<Uuid>,
}

#[derive(Debug, Object)]
pub struct ProgressDto {
    pub percent: u8,
    #[oai(nullable)]
    pub stage: Option<String>,
    #[oai(nullable)]
    pub message: Option<String>,
}

#[derive(Debug, Object)]
pub struct ReviewDto {
    /// `approved` or `rejected`.
    pub decision: String,
    #[oai(nullable)]
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

/// A job.
#[derive(Debug, Object)]
pub struct JobDto {
    pub id: Uuid,
    pub project_id: Uuid,
    pub kind: String,
    pub status: JobStatusDto,
    pub input: Value,
    pub priority: u8,
    pub metadata: BTreeMap<String, String>,
    pub progress: ProgressDto,
    /// How many times the job has been started.
    pub attempt: u32,
    pub max_attempts: u32,
    #[oai(nullable)]
    pub result: Option<Value>,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
    pub review: Option<ReviewDto>,
    /// For a running job: when the worker's lease ends unless it heartbeats.
    #[oai(nullable)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub started_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub finished_at: Option<DateTime<Utc>>,
    /// When a finished job's files and results expire.
    #[oai(nullable)]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the job expired (`job.expired`); its status stays the outcome.
    #[oai(nullable)]
    pub expired_at: Option<DateTime<Utc>>,
    /// Files submitted with the job (gone once it expires).
    pub input_files: Vec<FileDto>,
    /// Files the worker attached to the result (gone once the job expires).
    pub result_files: Vec<FileDto>,
}

impl JobDto {
    pub fn render(id: Uuid, job: &JobState, retention: Duration) -> Self {
        Self {
            id,
            project_id: job.project_id.as_uuid(),
            kind: job.kind.as_str().to_owned(),
            status: job.status.into(),
            input: job.input.clone(),
            priority: job.priority.value(),
            metadata: job.metadata.as_map().clone(),
            progress: ProgressDto {
                percent: job.progress.percent.value(),
                stage: job.progress.stage.clone(),
                message: job.progress.message.clone(),
            },
            attempt: job.attempt,
            max_attempts: job.max_attempts.value(),
            result: job.result.clone(),
            error: job.error.clone(),
            review: job.review.as_ref().map(|r| ReviewDto {
                decision: match r.decision {
                    ReviewDecision::Approved => "approved".into(),
                    ReviewDecision::Rejected => "rejected".into(),
                },
                comment: r.comment.clone(),
                at: r.at,
            }),
            lease_expires_at: (job.status == JobStatus::Running)
                .then(|| job.lease.as_ref().map(|l| l.expires_at))
                .flatten(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            expires_at: job.finished_at.map(|at| at + retention),
            expired_at: job.expired_at,
            input_files: job
                .input_files
                .iter()
                .map(|f| FileDto::render(id, f))
                .collect(),
            result_files: job
                .result_files
                .iter()
                .map(|f| FileDto::render(id, f))
                .collect(),
        }
    }
}

/// A page of jobs.
#[derive(Debug, Object)]
pub struct JobList {
    pub data: Vec<JobDto>,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// `PATCH /jobs/{id}/metadata` body: a merge patch, `null` removes a key.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct MetadataUpdate {
    pub metadata: BTreeMap<String, Option<String>>,
}

/// `approve` / `reject` body.
#[derive(Debug, Object, Default, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    #[oai(nullable)]
    pub comment: Option<String>,
}

/// A job's progress alone, for cheap polling.
#[derive(Debug, Object)]
pub struct JobProgressDto {
    pub status: JobStatusDto,
    pub percent: u8,
    #[oai(nullable)]
    pub stage: Option<String>,
    #[oai(nullable)]
    pub message: Option<String>,
}

/// A succeeded job's result.
#[derive(Debug, Object)]
pub struct JobResultDto {
    pub id: Uuid,
    pub result: Value,
}

/// `POST /worker/lease` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Kinds this worker handles; empty, `null` or absent: any kind.
    #[oai(default)]
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Lease length; defaults to the server's `jobs.default_lease_seconds`.
    #[oai(nullable)]
    pub lease_seconds: Option<i64>,
}

/// `POST /jobs/{id}/heartbeat` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// 0–100. Each field left out (or `null`) keeps what the job has, so `{}` only keeps the
    /// lease alive.
    #[oai(nullable)]
    pub progress: Option<i64>,
    /// What the worker is doing now (up to 100 characters; `""` clears it).
    #[oai(nullable)]
    pub stage: Option<String>,
    /// Up to 1,000 characters; `""` clears it.
    #[oai(nullable)]
    pub message: Option<String>,
    /// How long from now the lease runs; left out, as long as it was last taken or extended
    /// for (at most `jobs.max_lease_seconds`).
    #[oai(nullable)]
    pub lease_seconds: Option<i64>,
}

#[derive(Debug, Object)]
pub struct HeartbeatResponse {
    /// True when the job was cancelled: stop working on it.
    pub cancel_requested: bool,
    #[oai(nullable)]
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// `POST /jobs/{id}/complete` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    #[oai(nullable, default)]
    pub result: Option<Value>,
    /// Completed uploads to attach as result files.
    #[oai(nullable)]
    pub files: Option<Vec<ResultFile>>,
}

/// A result file given by reference to a completed upload.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ResultFile {
    pub upload_id: Uuid,
}

/// `POST /jobs/{id}/fail` body.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub error: String,
    /// Whether another attempt may succeed (default true).
    #[oai(nullable)]
    pub retryable: Option<bool>,
}
