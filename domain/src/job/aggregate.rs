//! The rules of the job lifecycle: `queued → running → succeeded | failed | cancelled`, lease
//! expiry and worker failures back to `queued` until `max_attempts`, review of succeeded jobs,
//! metadata updates, deletion, and expiry once the retention period has passed. `decide` is a pure function of state and command; the
//! cqrs-es `Aggregate` impl only forwards to it.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::JobCommand;
use super::error::JobError;
use super::events::{JobEvent, RetryReason};
use super::state::{JobState, JobStatus, ReviewDecision};
use crate::KeyId;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    state: Option<JobState>,
}

impl Job {
    /// The job as its events leave it, or `None` before it was submitted.
    pub fn state(&self) -> Option<&JobState> {
        self.state.as_ref()
    }

    /// Decides which events a command produces, without changing anything.
    pub fn decide(&self, command: JobCommand) -> Result<Vec<JobEvent>, JobError> {
        let Some(job) = self.state.as_ref() else {
            return match command {
                JobCommand::Submit(submit, at) => Ok(vec![JobEvent::Queued {
                    project_id: submit.project_id,
                    kind: submit.kind,
                    input: submit.input,
                    priority: submit.priority,
                    metadata: submit.metadata,
                    max_attempts: submit.max_attempts,
                    input_files: submit.input_files,
                    at,
                }]),
                _ => Err(JobError::NotFound),
            };
        };
        if job.deleted {
            return Err(JobError::NotFound);
        }
        let refuse = |action| JobError::InvalidTransition {
            action,
            from: job.status,
        };
        match command {
            JobCommand::Submit(..) => Err(JobError::AlreadyExists),
            JobCommand::Lease { worker, lease, now } => {
                if job.status != JobStatus::Queued {
                    return Err(refuse("lease"));
                }
                Ok(vec![JobEvent::Started {
                    worker_key_id: worker,
                    attempt: job.attempt + 1,
                    lease_expires_at: now + lease,
                    at: now,
                }])
            }
            JobCommand::Heartbeat {
                worker,
                percent,
                stage,
                message,
                lease,
                max_lease,
                now,
            } => {
                // A cancelled job answers the heartbeat without an event; the caller reads
                // `cancel_requested` from the state.
                if job.status == JobStatus::Cancelled && job.cancel_requested {
                    check_holder(job, &worker)?;
                    return Ok(vec![]);
                }
                check_live_lease(job, &worker, now, refuse("heartbeat"))?;
                let held = job.lease.as_ref().map_or(0, |l| l.length_seconds);
                let lease = lease.unwrap_or_else(|| Duration::seconds(held).min(max_lease));
                let kept = &job.progress;
                Ok(vec![JobEvent::Progress {
                    percent: percent.unwrap_or(kept.percent),
                    stage: stage.unwrap_or_else(|| kept.stage.clone()),
                    message: message.unwrap_or_else(|| kept.message.clone()),
                    lease_expires_at: now + lease,
                    at: now,
                }])
            }
            JobCommand::Complete {
                worker,
                result,
                files,
                now,
            } => {
                check_live_lease(job, &worker, now, refuse("complete"))?;
                Ok(vec![JobEvent::Succeeded {
                    result,
                    files,
                    at: now,
                }])
            }
            JobCommand::Fail {
                worker,
                error,
                retryable,
                now,
            } => {
                check_live_lease(job, &worker, now, refuse("fail"))?;
                Ok(vec![retry_or_fail(
                    job,
                    retryable,
                    RetryReason::WorkerFailed,
                    Some(error),
                    now,
                )])
            }
            JobCommand::ExpireLease { now } => {
                let expired = job.status == JobStatus::Running
                    && job.lease.as_ref().is_some_and(|l| l.expires_at <= now);
                if !expired {
                    return Ok(vec![]);
                }
                let error = Some("the worker's lease expired".to_owned());
                Ok(vec![retry_or_fail(
                    job,
                    true,
                    RetryReason::LeaseExpired,
                    error,
                    now,
                )])
            }
            JobCommand::Cancel { now } => {
                if job.status.is_finished() {
                    return Err(refuse("cancel"));
                }
                Ok(vec![JobEvent::Cancelled {
                    was_running: job.status == JobStatus::Running,
                    at: now,
                }])
            }
            JobCommand::UpdateMetadata { patch, now } => {
                // A patch that changes nothing records nothing (as a key's or a project's
                // unchanged settings do).
                if job.metadata.merged(&patch)? == job.metadata {
                    return Ok(vec![]);
                }
                Ok(vec![JobEvent::MetadataUpdated { patch, at: now }])
            }
            JobCommand::Approve { comment, now } => {
                check_reviewable(job, refuse("approve"))?;
                Ok(vec![JobEvent::Approved { comment, at: now }])
            }
            JobCommand::Reject { comment, now } => {
                check_reviewable(job, refuse("reject"))?;
                Ok(vec![JobEvent::Rejected { comment, at: now }])
            }
            JobCommand::Delete { now } => {
                if job.status == JobStatus::Running {
                    return Err(refuse("delete"));
                }
                Ok(vec![JobEvent::Deleted { at: now }])
            }
            JobCommand::Expire { retention, now } => {
                let due = job.status.is_finished()
                    && job.finished_at.is_some_and(|at| at + retention <= now);
                if !due || job.expired_at.is_some() {
                    return Ok(vec![]);
                }
                Ok(vec![JobEvent::Expired { at: now }])
            }
        }
    }
}

fn check_holder(job: &JobState, worker: &KeyId) -> Result<(), JobError> {
    match &job.lease {
        Some(lease) if &lease.worker_key_id == worker => Ok(()),
        _ => Err(JobError::LeaseNotHeld),
    }
}

impl JobState {
    /// What `Complete` would check: that `worker` holds a live lease on the running job.
    /// Callers use it to refuse before costly work (storing result files).
    pub fn check_completable(&self, worker: &KeyId, now: DateTime<Utc>) -> Result<(), JobError> {
        if self.deleted {
            return Err(JobError::NotFound);
        }
        let refused = JobError::InvalidTransition {
            action: "complete",
            from: self.status,
        };
        check_live_lease(self, worker, now, refused)
    }
}

fn check_live_lease(
    job: &JobState,
    worker: &KeyId,
    now: DateTime<Utc>,
    not_running: JobError,
) -> Result<(), JobError> {
    if job.status != JobStatus::Running {
        if job.lease_expired_for.as_ref() == Some(worker) {
            return Err(JobError::LeaseExpired);
        }
        return Err(not_running);
    }
    check_holder(job, worker)?;
    if job.lease.as_ref().is_some_and(|l| l.expires_at <= now) {
        return Err(JobError::LeaseExpired);
    }
    Ok(())
}

fn check_reviewable(job: &JobState, refused: JobError) -> Result<(), JobError> {
    if job.status != JobStatus::Succeeded {
        return Err(refused);
    }
    match (&job.review, refused) {
        (Some(review), JobError::InvalidTransition { action, .. }) => {
            Err(JobError::AlreadyReviewed {
                action,
                approved: review.decision == ReviewDecision::Approved,
            })
        }
        (Some(_), refused) => Err(refused),
        (None, _) => Ok(()),
    }
}

fn retry_or_fail(
    job: &JobState,
    retryable: bool,
    reason: RetryReason,
    error: Option<String>,
    at: DateTime<Utc>,
) -> JobEvent {
    let attempt = job.attempt;
    if retryable && attempt < job.max_attempts.value() {
        JobEvent::Retrying {
            attempt,
            reason,
            error,
            at,
        }
    } else {
        JobEvent::Failed {
            attempt,
            reason,
            error,
            at,
        }
    }
}

impl Aggregate for Job {
    const TYPE: &'static str = "job";
    type Command = JobCommand;
    type Event = JobEvent;
    type Error = JobError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.state = JobState::fold(self.state.take(), &event);
    }
}
