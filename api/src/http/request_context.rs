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
    /// The caller's own project (a project key's).
    pub project: Option<uuid::Uuid>,
    /// The projects the request acted in (`note_project`).
    pub acted_in: ActedIn,
}

impl Notes {
    /// The project the request log records: the caller's own, else the one project the request
    /// acted in (none when it acted in several, as a list may).
    pub fn recorded_project(&self) -> Option<uuid::Uuid> {
        match self.acted_in {
            _ if self.project.is_some() => self.project,
            ActedIn::One(project) => Some(project),
            ActedIn::Nowhere | ActedIn::Several => None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ActedIn {
    #[default]
    Nowhere,
    One(uuid::Uuid),
    Several,
}

impl ActedIn {
    fn and(self, project: uuid::Uuid) -> Self {
        match self {
            ActedIn::Nowhere => ActedIn::One(project),
            ActedIn::One(one) if one == project => self,
            _ => ActedIn::Several,
        }
    }
}

fn note(change: impl FnOnce(&mut Notes)) {
    let _ = REQUEST.try_with(|r| change(&mut r.notes.lock().expect("request notes lock")));
}

/// Records the rate-limit headers for the response of the request being handled.
pub fn set_rate_headers(headers: crate::limits::RateHeaders) {
    note(|n| n.rate = Some(headers));
}

/// Records a project the request acts in, for the request log.
pub fn note_project(project: uuid::Uuid) {
    note(|n| n.acted_in = n.acted_in.and(project));
}

/// The project the request log will record for the request being handled, so far.
pub fn recorded_project() -> Option<uuid::Uuid> {
    REQUEST
        .try_with(|r| {
            r.notes
                .lock()
                .expect("request notes lock")
                .recorded_project()
        })
        .ok()
        .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_recorded_in_the_one_project_it_acted_in_or_its_callers_own() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let notes = |project, acted_in| Notes {
            project,
            acted_in,
            ..Notes::default()
        };
        let once = ActedIn::Nowhere.and(a);
        assert_eq!(notes(None, once).recorded_project(), Some(a));
        assert_eq!(notes(None, once.and(a)).recorded_project(), Some(a));
        // A list over two projects' endpoints belongs to neither.
        assert_eq!(notes(None, once.and(b)).recorded_project(), None);
        assert_eq!(notes(None, once.and(b).and(a)).recorded_project(), None);
        assert_eq!(notes(Some(b), once).recorded_project(), Some(b));
        assert_eq!(notes(None, ActedIn::Nowhere).recorded_project(), None);
    }
}
