//! The expiry sweeper: records what time has ended. Finished jobs whose retention period has
//! passed get `job.expired`; keys whose expiry (their own, or a rotation's grace end) has passed
//! get `api_key.expired`. Candidates come from the read models; each aggregate re-checks the
//! clock and records an expiry once, so a lagging read model or two replicas sweeping at once
//! cannot expire anything early or twice. An expired job's files are removed with it, and the
//! file janitor removes uploads no job took in time. `run_once` is the step tests call; `run`
//! calls it on a timer.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_domain::api_key::{ApiKeyCommand, ApiKeyError};
use herald_domain::job::{JobCommand, JobError};
use herald_store::{CommandError, EventMetadata};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

const BATCH: i64 = 100;

/// What one sweep changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub jobs: usize,
    pub keys: usize,
    /// Files whose bytes were removed (of expired jobs, and uploads no job took in time).
    pub files: usize,
}

pub struct ExpirySweeper {
    state: Arc<AppState>,
}

impl ExpirySweeper {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Expires every job and key due at `now` (up to a batch of each).
    pub async fn run_once(&self, now: DateTime<Utc>) -> anyhow::Result<Swept> {
        let metadata = EventMetadata::system("expiry-sweeper");
        let retention = crate::app::jobs::retention(&self.state);
        let mut swept = Swept::default();
        let jobs =
            herald_projections::jobs::due_for_expiry(&self.state.pool, now - retention, BATCH)
                .await?;
        for id in jobs {
            let command = JobCommand::Expire { retention, now };
            match self
                .state
                .jobs
                .execute(&id.to_string(), command, &metadata, true)
                .await
            {
                Ok(committed) => {
                    swept.jobs += usize::from(committed.appended > 0);
                    // Marked here, removed by the file janitor's pass below.
                    crate::files::janitor::mark_job_files(&self.state, id).await?;
                }
                Err(CommandError::Rejected(JobError::NotFound)) => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!("expiring job {id}")))
                }
            }
        }
        let keys =
            herald_projections::api_keys::due_for_expiry(&self.state.pool, now, BATCH).await?;
        for id in keys {
            let command = ApiKeyCommand::Expire { now };
            match self.state.keys.execute(&id, command, &metadata, true).await {
                Ok(committed) => swept.keys += usize::from(committed.appended > 0),
                Err(CommandError::Rejected(ApiKeyError::NotFound | ApiKeyError::Revoked)) => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error).context(format!("expiring key {id}")))
                }
            }
        }
        let files = crate::files::janitor::sweep(&self.state, now).await?;
        swept.files += files.uploads + files.job_files;
        Ok(swept)
    }

    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.run_once(Utc::now()).await {
                Ok(Swept {
                    jobs: 0,
                    keys: 0,
                    files: 0,
                }) => {}
                Ok(swept) => tracing::info!(
                    jobs = swept.jobs,
                    keys = swept.keys,
                    files = swept.files,
                    "expired"
                ),
                Err(error) => tracing::error!(error = format!("{error:#}"), "expiry sweep failed"),
            }
        }
    }
}
