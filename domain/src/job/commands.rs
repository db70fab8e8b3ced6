//! What callers ask of a job. Each command carries the facts the rules need from outside the
//! aggregate (the time, the acting worker), so handling it is a pure function.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::values::{JobKind, MaxAttempts, Metadata, MetadataPatch, Percent, Priority};
use crate::{FileRef, KeyId, ProjectId};

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitJob {
    pub project_id: ProjectId,
    pub kind: JobKind,
    pub input: Value,
    pub priority: Priority,
    pub metadata: Metadata,
    pub max_attempts: MaxAttempts,
    /// Stored files the job works on (uploaded beforehand or with the submission).
    pub input_files: Vec<FileRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobCommand {
    Submit(SubmitJob, DateTime<Utc>),
    /// A worker takes a queued job until `now + lease`.
    Lease {
        worker: KeyId,
        lease: Duration,
        now: DateTime<Utc>,
    },
    /// The lease holder reports progress and extends its lease. A field left `None` keeps
    /// what the job has: its progress, stage or message (`Some(None)` clears those two), and
    /// the length the lease was last taken or extended for, up to `max_lease`.
    Heartbeat {
        worker: KeyId,
        percent: Option<Percent>,
        stage: Option<Option<String>>,
        message: Option<Option<String>>,
        lease: Option<Duration>,
        /// The longest lease the server grants now (a length kept from a lease taken under a
        /// higher limit is cut to it).
        max_lease: Duration,
        now: DateTime<Utc>,
    },
    Complete {
        worker: KeyId,
        result: Value,
        /// Result files the worker stored with its answer.
        files: Vec<FileRef>,
        now: DateTime<Utc>,
    },
    Fail {
        worker: KeyId,
        error: String,
        retryable: bool,
        now: DateTime<Utc>,
    },
    /// Issued by the lease reconciler: requeue (or fail) a running job whose lease has passed.
    ExpireLease {
        now: DateTime<Utc>,
    },
    Cancel {
        now: DateTime<Utc>,
    },
    UpdateMetadata {
        patch: MetadataPatch,
        now: DateTime<Utc>,
    },
    Approve {
        comment: Option<String>,
        now: DateTime<Utc>,
    },
    Reject {
        comment: Option<String>,
        now: DateTime<Utc>,
    },
    Delete {
        now: DateTime<Utc>,
    },
    /// Issued by the retention sweeper: a job finished longer than `retention` ago expires
    /// (once; anything else is a no-op, so two sweepers cannot expire a job twice).
    Expire {
        retention: chrono::Duration,
        now: DateTime<Utc>,
    },
}

impl JobCommand {
    /// Whether the command may be run again after losing an optimistic-concurrency race.
    /// Every command re-checks the fresh state, so a retry cannot apply an intent twice; a
    /// lease is the exception: losing the race means another worker got the job, and the
    /// caller should move on to the next candidate instead.
    pub fn retry_on_conflict(&self) -> bool {
        !matches!(self, JobCommand::Lease { .. })
    }
}
