//! Projections: the catch-up reader over the global log and the read models it builds.
//!
//! `runtime` owns the machinery every projection shares (checkpoints, the gap-free page reader,
//! the advisory lock that keeps one runner per projection across replicas, wake-ups, rebuilds).
//! Each read model (`jobs`, `projects`, `api_keys`, `users`) owns its table's writes and its queries; no
//! other crate writes these tables (DESIGN invariant 1). The request log's usage counts are a
//! projection too, of that log rather than of the events: `usage_count` keeps them, `usage`
//! reads them. Nothing here makes HTTP calls.

pub mod api_keys;
pub mod jobs;
pub mod projects;
pub mod runtime;
pub mod usage;
pub mod usage_count;
pub mod users;

use std::sync::Arc;

pub use runtime::{Projection, ProjectionRunner, ProjectionStatus};

/// Every read-model projection, in a fixed order. The webhook projector (in `webhooks`) uses the
/// same runtime but is registered by the binary.
pub fn read_models() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(jobs::JobsProjection),
        Arc::new(projects::ProjectsProjection),
        Arc::new(api_keys::ApiKeysProjection),
        Arc::new(users::UsersProjection),
    ]
}
