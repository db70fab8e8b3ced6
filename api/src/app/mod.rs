//! Application services: the glue between an authenticated request and the aggregates. Each
//! function turns a caller's intent into one command (with event metadata and tenancy checks),
//! runs it, and maps domain refusals to API errors. Rules stay in `domain`; SQL for read models
//! stays in `projections`.

pub mod jobs;
pub mod keys;
pub mod projects;
pub mod replay;
pub mod replay_runs;
pub mod users;
pub mod webhooks;
