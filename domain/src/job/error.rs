//! Why a job command was refused. Each variant has a stable code that the API exposes.

use super::state::JobStatus;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job not found")]
    NotFound,
    #[error("job already exists")]
    AlreadyExists,
    #[error("cannot {action} a job that is {}", from.as_str())]
    InvalidTransition {
        action: &'static str,
        from: JobStatus,
    },
    /// A review of a job reviewed already (its status is still `succeeded`).
    #[error("cannot {action} a job that was {} already", if *approved { "approved" } else { "rejected" })]
    AlreadyReviewed {
        action: &'static str,
        approved: bool,
    },
    #[error("this worker does not hold the job's lease")]
    LeaseNotHeld,
    #[error("the job's lease has expired")]
    LeaseExpired,
    #[error("{0}")]
    Invalid(#[from] crate::FieldError),
}

impl JobError {
    /// The stable, UPPER_SNAKE code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::NotFound => "JOB_NOT_FOUND",
            JobError::AlreadyExists => "JOB_ALREADY_EXISTS",
            JobError::InvalidTransition { .. } | JobError::AlreadyReviewed { .. } => {
                "INVALID_STATE_TRANSITION"
            }
            JobError::LeaseNotHeld => "LEASE_NOT_HELD",
            JobError::LeaseExpired => "LEASE_EXPIRED",
            JobError::Invalid(_) => "VALIDATION_FAILED",
        }
    }
}
