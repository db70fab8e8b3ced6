//! What happened to a job. Events are stored forever and sent to webhook receivers, so their
//! shape is public: the `type` tag is the catalogue name (`job.queued`, ...), fields are only
//! ever added, and no secret ever enters one.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::values::{JobKind, MaxAttempts, Metadata, MetadataPatch, Percent, Priority};
use crate::{FileRef, KeyId, ProjectId};

/// Why a job went back to the queue or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryReason {
    /// The worker stopped heartbeating before its lease deadline.
    LeaseExpired,
    /// The worker reported a failure.
    WorkerFailed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum JobEvent {
    #[serde(rename = "job.queued")]
    Queued {
        project_id: ProjectId,
        kind: JobKind,
        input: Value,
        priority: Priority,
        metadata: Metadata,
        max_attempts: MaxAttempts,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        input_files: Vec<FileRef>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.started")]
    Started {
        worker_key_id: KeyId,
        attempt: u32,
        lease_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.progress")]
    Progress {
        percent: Percent,
        stage: Option<String>,
        message: Option<String>,
        lease_expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.retrying")]
    Retrying {
        attempt: u32,
        reason: RetryReason,
        error: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.succeeded")]
    Succeeded {
        result: Value,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<FileRef>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.failed")]
    Failed {
        attempt: u32,
        reason: RetryReason,
        error: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.cancelled")]
    Cancelled {
        /// True when a worker held the job: it learns of the cancel at its next heartbeat.
        was_running: bool,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.metadata_updated")]
    MetadataUpdated {
        patch: MetadataPatch,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.approved")]
    Approved {
        comment: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.rejected")]
    Rejected {
        comment: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "job.deleted")]
    Deleted { at: DateTime<Utc> },
    /// The retention period after the job finished has passed: its files are gone, its history
    /// stays.
    #[serde(rename = "job.expired")]
    Expired { at: DateTime<Utc> },
}

impl JobEvent {
    /// The catalogue name, as stored in the log and sent to webhook receivers.
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Queued { .. } => "job.queued",
            JobEvent::Started { .. } => "job.started",
            JobEvent::Progress { .. } => "job.progress",
            JobEvent::Retrying { .. } => "job.retrying",
            JobEvent::Succeeded { .. } => "job.succeeded",
            JobEvent::Failed { .. } => "job.failed",
            JobEvent::Cancelled { .. } => "job.cancelled",
            JobEvent::MetadataUpdated { .. } => "job.metadata_updated",
            JobEvent::Approved { .. } => "job.approved",
            JobEvent::Rejected { .. } => "job.rejected",
            JobEvent::Deleted { .. } => "job.deleted",
            JobEvent::Expired { .. } => "job.expired",
        }
    }
}

impl DomainEvent for JobEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }
    fn event_version(&self) -> String {
        "1".to_owned()
    }
}
