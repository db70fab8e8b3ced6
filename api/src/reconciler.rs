//! The lease reconciler: finds running jobs whose lease deadline has passed (from the jobs read
//! model) and issues `ExpireLease` for each, which requeues the job or fails it when its
//! attempts are used up. The aggregate re-checks the deadline, so a lagging read model or two
//! replicas reconciling at once cannot expire a lease early or twice. `run_once` is the step
//! tests call; `run` calls it on a timer.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_domain::job::{JobCommand, JobError};
use herald_store::{CommandError, EventMetadata};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

const BATCH: i64 = 100;

pub struct LeaseReconciler {
    state: Arc<AppState>,
}

impl LeaseReconciler {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }

    /// Expires every lease past its deadline at `now`; returns how many jobs changed.
    pub async fn run_once(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let metadata = EventMetadata::system("lease-reconciler");
        let expired =
            herald_projections::jobs::expired_leases(&self.state.pool, now, BATCH).await?;
        let mut changed = 0;
        for id in expired {
            let command = JobCommand::ExpireLease { now };
            match self
                .state
                .jobs
                .execute(&id.to_string(), command, &metadata, true)
                .await
            {
                Ok(committed) => changed += usize::from(committed.appended > 0),
                Err(CommandError::Rejected(JobError::NotFound)) => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("expiring the lease of job {id}")))
                }
            }
        }
        Ok(changed)
    }

    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.run_once(Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "expired job leases"),
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "lease reconciliation failed")
                }
            }
        }
    }
}
