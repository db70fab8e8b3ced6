//! HTTP plumbing shared by every endpoint: the problem+json error model (`problem`) and the
//! answers built from it (`edge_problems`), the per-request context (`request_context`) and
//! the outer middleware (`context`), and pagination cursors (`cursor`).

pub mod client_ip;
pub mod context;
pub mod cursor;
pub mod edge_problems;
#[cfg(test)]
mod edge_tests;
pub mod headers;
pub mod idempotency;
pub mod json_body;
mod json_shape;
mod nul_text;
pub mod payloads;
pub mod problem;
mod redact;
pub mod request_context;
pub mod request_log;
pub mod route_templates;
pub mod streamed_body;
