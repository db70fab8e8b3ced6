//! The context of the request a task is handling, kept in a task-local by the edge middleware
//! (`context::Edge`): its id, client address, user agent and CSRF token for authentication and
//! event metadata, and the notes handlers leave for the edge (who the caller was, for the request
//! log; the rate-limit headers to stamp on the response).

use std::net::IpAddr;

tokio::task_local! {
    pub(super) static REQUEST: RequestContext;
}

/// The id of the request being handled by this task ("" outside a request).
pub fn current_request_id() -> String {
    REQUEST
        .try_with(|r| r.request_id.clone())
        .unwrap_or_default()
}

/// The client address of the request being handled by this task, if known.
pub fn current_client_ip() -> Option<IpAddr> {
    REQUEST
        .try_with(|r| r.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .ok()
        .flatten()
}

/// Whether the request being handled may change state (anything but GET, HEAD, OPTIONS) and
/// the `X-CSRF-Token` it carries: cookie sessions need both (see `AppState::authenticate`).
pub fn current_csrf() -> (bool, Option<String>) {
    REQUEST
        .try_with(|r| (r.state_changing, r.csrf_token.clone()))
        .unwrap_or((true, None))
}

/// What handling a request learned that the edge needs afterwards: who the caller was (for
/// the request log) and the rate-limit headers to stamp on the response.
#[derive(Debug, Default)]
pub struct Notes {
    pub rate: Option<crate::limits::RateHeaders>,
    /// Actor type and id.
    pub actor: Option<(&'static str, String)>,
    pub project: Option<uuid::Uuid>,
}

fn note(change: impl FnOnce(&mut Notes)) {
    let _ = REQUEST.try_with(|r| change(&mut r.notes.lock().expect("request notes lock")));
}

/// Records the rate-limit headers for the response of the request being handled.
pub fn set_rate_headers(headers: crate::limits::RateHeaders) {
    note(|n| n.rate = Some(headers));
}

/// Records the project the request acts in, for the request log, unless the caller's own
/// (a project key's) is recorded already.
pub fn note_project(project: uuid::Uuid) {
    note(|n| {
        n.project.get_or_insert(project);
    });
}

/// Records who is calling, for the request log.
pub fn set_actor(kind: &'static str, id: String, project: Option<uuid::Uuid>) {
    note(|n| {
        n.actor = Some((kind, id));
        n.project = project;
    });
}

/// What event metadata and authentication need to know about the request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub state_changing: bool,
    pub csrf_token: Option<String>,
    /// Filled in while the request is handled; read by the edge afterwards.
    pub notes: std::sync::Arc<std::sync::Mutex<Notes>>,
}
