//! A job as its events leave it. The aggregate folds its own events into this state to decide
//! commands, and the jobs projection folds the same events into the same state to build the read
//! model, so a job rendered from either source is identical.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{JobEvent, RetryReason};
use super::values::{JobKind, MaxAttempts, Metadata, Percent, Priority};
use crate::{FileRef, KeyId, ProjectId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    pub percent: Percent,
    pub stage: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub worker_key_id: KeyId,
    pub expires_at: DateTime<Utc>,
    /// How long the lease was last taken or extended for, in seconds: what a heartbeat that
    /// names no length extends it by. (0 in a read-model copy stored before it was kept; the
    /// aggregate always has it, folded from the events.)
    #[serde(default)]
    pub length_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    Approved,
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub decision: ReviewDecision,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub project_id: ProjectId,
    pub kind: JobKind,
    pub status: JobStatus,
    pub input: Value,
    pub priority: Priority,
    pub metadata: Metadata,
    pub progress: Progress,
    pub attempt: u32,
    pub max_attempts: MaxAttempts,
    pub lease: Option<Lease>,
    pub cancel_requested: bool,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub review: Option<Review>,
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the retention sweeper expired the job (its files are gone; its status stays).
    #[serde(default)]
    pub expired_at: Option<DateTime<Utc>>,
    /// Files submitted with the job.
    #[serde(default)]
    pub input_files: Vec<FileRef>,
    /// Files the worker attached to its result.
    #[serde(default)]
    pub result_files: Vec<FileRef>,
    /// The worker whose lease ran out and was taken back (the job requeued or failed), until
    /// the job is leased again: its late heartbeat, completion or failure is told
    /// `LEASE_EXPIRED`, not that the job is queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expired_for: Option<KeyId>,
}

impl JobState {
    /// Folds one event into the state. `None` is the state before `job.queued`; events that do
    /// not fit the state (which the aggregate never emits) are ignored rather than panicking.
    pub fn fold(state: Option<JobState>, event: &JobEvent) -> Option<JobState> {
        if let JobEvent::Queued {
            project_id,
            kind,
            input,
            priority,
            metadata,
            max_attempts,
            input_files,
            at,
        } = event
        {
            return Some(JobState {
                project_id: *project_id,
                kind: kind.clone(),
                status: JobStatus::Queued,
                input: input.clone(),
                priority: *priority,
                metadata: metadata.clone(),
                progress: Progress::default(),
                attempt: 0,
                max_attempts: *max_attempts,
                lease: None,
                cancel_requested: false,
                result: None,
                error: None,
                review: None,
                deleted: false,
                created_at: *at,
                updated_at: *at,
                started_at: None,
                finished_at: None,
                expired_at: None,
                input_files: input_files.clone(),
                result_files: Vec::new(),
                lease_expired_for: None,
            });
        }
        let mut job = state?;
        job.apply(event);
        Some(job)
    }

    /// Keeps who held a lease that ran out, before the lease is dropped.
    fn note_expiry(&mut self, reason: RetryReason) {
        if reason == RetryReason::LeaseExpired {
            self.lease_expired_for = self.lease.as_ref().map(|l| l.worker_key_id.clone());
        }
    }

    fn finish(&mut self, status: JobStatus, at: DateTime<Utc>) {
        self.status = status;
        self.lease = None;
        self.finished_at = Some(at);
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Queued { .. } => {}
            JobEvent::Started {
                worker_key_id,
                attempt,
                lease_expires_at,
                at,
            } => {
                self.status = JobStatus::Running;
                self.attempt = *attempt;
                self.lease_expired_for = None;
                self.progress = Progress::default();
                self.lease = Some(Lease {
                    worker_key_id: worker_key_id.clone(),
                    expires_at: *lease_expires_at,
                    length_seconds: (*lease_expires_at - *at).num_seconds(),
                });
                self.started_at.get_or_insert(*at);
            }
            JobEvent::Progress {
                percent,
                stage,
                message,
                lease_expires_at,
                at,
            } => {
                self.progress = Progress {
                    percent: *percent,
                    stage: stage.clone(),
                    message: message.clone(),
                };
                if let Some(lease) = &mut self.lease {
                    lease.expires_at = *lease_expires_at;
                    lease.length_seconds = (*lease_expires_at - *at).num_seconds();
                }
            }
            JobEvent::Retrying { error, reason, .. } => {
                self.note_expiry(*reason);
                self.status = JobStatus::Queued;
                self.lease = None;
                self.error = error.clone();
            }
            JobEvent::Succeeded { result, files, at } => {
                self.progress.percent = Percent::parse(100).unwrap_or_default();
                self.result = Some(result.clone());
                self.result_files = files.clone();
                self.error = None;
                self.finish(JobStatus::Succeeded, *at);
            }
            JobEvent::Failed {
                error, at, reason, ..
            } => {
                self.note_expiry(*reason);
                self.error = error.clone();
                self.finish(JobStatus::Failed, *at);
            }
            JobEvent::Cancelled { was_running, at } => {
                // The lease is kept: it records which worker must be told at its next heartbeat.
                self.cancel_requested = *was_running;
                self.status = JobStatus::Cancelled;
                self.finished_at = Some(*at);
            }
            JobEvent::MetadataUpdated { patch, .. } => {
                if let Ok(merged) = self.metadata.merged(patch) {
                    self.metadata = merged;
                }
            }
            JobEvent::Approved { comment, at } | JobEvent::Rejected { comment, at } => {
                let decision = match event {
                    JobEvent::Approved { .. } => ReviewDecision::Approved,
                    _ => ReviewDecision::Rejected,
                };
                self.review = Some(Review {
                    decision,
                    comment: comment.clone(),
                    at: *at,
                });
            }
            JobEvent::Deleted { .. } => self.deleted = true,
            JobEvent::Expired { at } => self.expired_at = Some(*at),
        }
        self.updated_at = event_time(event);
    }
}

fn event_time(event: &JobEvent) -> DateTime<Utc> {
    match event {
        JobEvent::Queued { at, .. }
        | JobEvent::Started { at, .. }
        | JobEvent::Progress { at, .. }
        | JobEvent::Retrying { at, .. }
        | JobEvent::Succeeded { at, .. }
        | JobEvent::Failed { at, .. }
        | JobEvent::Cancelled { at, .. }
        | JobEvent::MetadataUpdated { at, .. }
        | JobEvent::Approved { at, .. }
        | JobEvent::Rejected { at, .. }
        | JobEvent::Deleted { at }
        | JobEvent::Expired { at } => *at,
    }
}
