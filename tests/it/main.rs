//! Integration tests: the real Herald application over real HTTP against a real PostgreSQL
//! (started by `scripts/test`), one fresh database per test.

mod files_support;
mod support;

mod account_webhooks;
mod api_keys;
mod appends;
mod audit;
mod audit_edges;
mod audit_export;
mod audit_verify_range;
mod audit_visibility;
mod audit_writers;
mod bad_input;
mod docs;
mod downloads;
mod events;
mod file_docs;
mod file_removal;
mod idempotency;
mod idempotency_screen;
mod ip_limits;
mod job_files;
mod job_lifecycle;
mod jobs_api;
mod log_reads;
mod openapi;
mod projections;
mod rate_limits;
mod roles;
mod s3_storage;
mod security;
mod security_edge;
mod shared_budgets;
mod shared_limits;
mod streams;
mod uploads;
mod usage;
mod users;
mod verify_example;
mod wakeups;
mod webhook_docs;
mod webhook_failures;
mod webhook_replays;
mod webhook_tls;
mod webhooks;
