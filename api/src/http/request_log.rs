//! Turns a finished API call into its request-log record and holds the response until the
//! record is committed. Bodies are never recorded, only their sizes; the path is kept without
//! its query string (which could carry data), beside the route template that served it, and
//! cut to `MAX_PATH` bytes (ending in `…` when cut), so a client cannot make one record, and
//! every export and verification that reads it, as large as its URL. The edge hands it the path
//! that way, with any credential in it redacted (`redact`), as its own log line shows it, and
//! redacts the user agent as it reads it.

use std::time::Instant;

use chrono::Utc;
use poem::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use poem::http::StatusCode;
use poem::Response;

use super::context::Notes;
use super::edge_problems::problem_response;
use super::problem::Problem;
use crate::audit::{AuditLog, Record};

/// What the edge saw of a request.
pub struct Seen<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The path as recorded: credentials redacted, cut to `MAX_PATH` (`bounded`).
    pub path: &'a str,
    /// The route template that serves the path (`route_templates`).
    pub route: &'a str,
    pub started: Instant,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_bytes: i64,
}

fn outcome(status: u16) -> &'static str {
    match status {
        401 | 403 => "denied",
        429 => "rate_limited",
        400..=499 => "client_error",
        500.. => "server_error",
        _ => "success",
    }
}

/// Records the call, then answers `response`, or a 503 when the record could not be committed
/// (a response must never leave without its record).
pub async fn record(
    audit: &AuditLog,
    seen: Seen<'_>,
    notes: Notes,
    mut response: Response,
) -> Response {
    // Streams (exports, event streams, downloads) are not read here: they are recorded with
    // their declared length, or -1, before their first byte leaves.
    let body = if is_streamed(&response) {
        None
    } else {
        Some(response.take_body().into_bytes().await.unwrap_or_default())
    };
    let response_bytes = match &body {
        Some(body) => body.len() as i64,
        None => response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(-1),
    };
    let status = response.status().as_u16();
    let error_code = (status >= 400)
        .then(|| serde_json::from_slice::<serde_json::Value>(body.as_deref()?).ok())
        .flatten()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned));
    let project_id = notes.recorded_project();
    let (actor_type, actor_id) = notes
        .actor
        .map_or((None, None), |(kind, id)| (Some(kind.to_owned()), Some(id)));
    let record = Record {
        seq: 0,
        occurred_at: Utc::now(),
        request_id: seen.request_id.to_owned(),
        actor_type,
        actor_id,
        project_id,
        route: seen.route.to_owned(),
        method: seen.method.to_owned(),
        path: seen.path.to_owned(),
        status: i32::from(status),
        latency_us: seen.started.elapsed().as_micros() as i64,
        request_bytes: seen.request_bytes,
        response_bytes,
        client_ip: seen.client_ip,
        user_agent: seen.user_agent,
        outcome: if response.headers().contains_key("idempotent-replayed") {
            "replayed".to_owned()
        } else {
            outcome(status).to_owned()
        },
        error_code,
        chain_format: crate::audit::CHAIN_FORMAT,
        prev_hash: String::new(),
        hash: String::new(),
    };
    if !audit.record(record).await {
        // Built after the request's scope has ended.
        return problem_response(
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "AUDIT_UNAVAILABLE",
                "the request could not be recorded in the audit trail, so its answer is withheld",
            )
            .with_request_id(seen.request_id),
        );
    }
    if let Some(body) = body {
        response.set_body(body);
    }
    response
}

/// Whether the answer is a stream: by its content type, or because it is a file (an
/// attachment, which may be of any type and size).
fn is_streamed(response: &Response) -> bool {
    if response
        .headers()
        .contains_key(poem::http::header::CONTENT_DISPOSITION)
    {
        return true;
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    [
        "text/event-stream",
        "application/x-ndjson",
        "text/csv",
        "application/octet-stream",
    ]
    .iter()
    .any(|streamed| content_type.starts_with(streamed))
}

/// The most of a path a record keeps, in bytes (no route of the API comes near it).
pub(crate) const MAX_PATH: usize = 1024;

/// `path`, or its first `MAX_PATH` bytes (at a character boundary) and `…` when it is longer.
pub(crate) fn bounded(path: &str) -> String {
    if path.len() <= MAX_PATH {
        return path.to_owned();
    }
    let mut end = MAX_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// The longest method recorded whole: the standard ones are at most 7 bytes.
pub(crate) const MAX_METHOD: usize = 16;

/// `method`, or its first `MAX_METHOD` bytes: HTTP bounds no method's length, and the usage
/// counts key their rows on it (a method of kilobytes would be an index entry too large for
/// PostgreSQL, failing every count after it). Methods are ASCII tokens.
pub(crate) fn bounded_method(method: &str) -> &str {
    method.get(..MAX_METHOD).unwrap_or(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_is_recorded_whole_up_to_sixteen_bytes() {
        assert_eq!(bounded_method("PATCH"), "PATCH");
        assert_eq!(bounded_method(&"X".repeat(16)), "X".repeat(16));
        assert_eq!(bounded_method(&"X".repeat(3000)), "X".repeat(16));
    }

    #[test]
    fn a_long_path_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(bounded("/api/v1/jobs"), "/api/v1/jobs");
        let exact = "a".repeat(MAX_PATH);
        assert_eq!(bounded(&exact), exact);
        let long = format!("{}é{}", "a".repeat(MAX_PATH - 1), "b".repeat(10));
        let cut = bounded(&long);
        assert_eq!(cut, format!("{}…", "a".repeat(MAX_PATH - 1)));
    }
}
