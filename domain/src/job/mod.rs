//! The Job aggregate: a unit of asynchronous work submitted by a client and carried out by a
//! worker. `values` parses raw input into valid types, `commands` and `events` are the
//! vocabulary, `state` folds events into the job as clients see it (shared by the aggregate and
//! the jobs read model, so both render a job identically), and `aggregate` holds the rules.

mod aggregate;
mod commands;
mod error;
mod events;
mod state;
mod values;

#[cfg(test)]
mod tests;

pub use aggregate::Job;
pub use commands::{JobCommand, SubmitJob};
pub use error::JobError;
pub use events::{JobEvent, RetryReason};
pub use state::{JobState, JobStatus, Lease, Progress, Review, ReviewDecision};
pub use values::{parse_text, JobKind, MaxAttempts, Metadata, MetadataPatch, Percent, Priority};
