//! The outermost middleware. `Edge` gives every request an id (a sane incoming `X-Request-Id`
//! is kept, otherwise a new UUIDv7), resolves the client address (`X-Forwarded-For` counts only
//! when the direct peer is a configured trusted proxy) and user agent for auth and event
//! metadata, and runs the request within its context (`request_context`). It enforces the body
//! size limit (413) whether or not `Content-Length` is sent, applies the request timeout, turns
//! every error that did not come from a handler (unknown route, wrong method, unsupported
//! content type, a body or parameter that does not parse, a body too large or too slow, missing
//! credentials: each counted against the client IP's budget) into problem+json
//! (`edge_problems`), adds the security headers, stamps `X-Request-Id` on every response, hands
//! the finished request to the request log, and logs one line per request (path without its
//! query string, which could hold data). Each call runs in a task of its own, so a client that
//! leaves cannot cut its handling or its record short.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ipnet::IpNet;

use poem::http::{header, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use uuid::Uuid;

use super::client_ip::client_ip;
use super::edge_problems::{
    abandoned, as_problem, name_path_params, panicked, problem_response, refused_before_handler,
    set_request_id, timeout_problem, too_large,
};
use super::headers::security_headers;
use super::problem::Problem;
use super::route_templates::RouteTemplates;
use super::streamed_body::{limit_streamed, Meter, StreamedLimits};
use crate::auth::CredentialHeaders;

use super::request_context::REQUEST;
pub use super::request_context::{
    current_client_ip, current_csrf, current_request_id, note_project, set_actor, set_rate_headers,
    Notes, RequestContext,
};

pub struct Edge {
    pub max_body_bytes: usize,
    pub timeout: Duration,
    /// Limits for the bodies that are streamed to file storage (`streamed_body`).
    pub streamed: StreamedLimits,
    pub trusted_proxies: Vec<IpNet>,
    /// Where every API call is recorded before its response leaves (`None`: not recorded).
    pub audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    /// The IP budget that refusals made before any handler spend, and the tracker of the
    /// calls in progress.
    pub state: Arc<crate::state::AppState>,
    /// The API's route templates, which records name.
    pub routes: Arc<RouteTemplates>,
}

impl<E: Endpoint + 'static> Middleware<E> for Edge {
    type Output = EdgeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        EdgeEndpoint(Arc::new(EdgeInner {
            inner,
            max_body_bytes: self.max_body_bytes,
            timeout: self.timeout,
            streamed: self.streamed.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
            audit: self.audit.clone(),
            state: self.state.clone(),
            routes: self.routes.clone(),
        }))
    }
}

pub struct EdgeEndpoint<E>(Arc<EdgeInner<E>>);

impl<E: Endpoint + 'static> Endpoint for EdgeEndpoint<E> {
    type Output = Response;

    /// Handles the call in a task of its own. The server drops a connection's future when its
    /// client goes away, and with it any call still being handled on it; the task runs the
    /// call to its end and records it, since the call may already have changed something
    /// (tests: `audit_edges`).
    async fn call(&self, req: Request) -> poem::Result<Response> {
        let edge = self.0.clone();
        let calls = &self.0.state.calls;
        let request_id = incoming_request_id(&req).unwrap_or_else(|| Uuid::now_v7().to_string());
        let id = request_id.clone();
        match calls.spawn(async move { edge.handle(req, id).await }).await {
            Ok(response) => Ok(response),
            Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
            // Cancelled: the runtime is stopping (the server waits for these tasks first, so
            // only a process exit gets here), and whether the call was recorded is unknown.
            Err(_) => Ok(abandoned(&request_id)),
        }
    }
}

struct EdgeInner<E> {
    inner: E,
    max_body_bytes: usize,
    timeout: Duration,
    streamed: StreamedLimits,
    trusted_proxies: Vec<IpNet>,
    audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    state: Arc<crate::state::AppState>,
    routes: Arc<RouteTemplates>,
}

fn incoming_request_id(req: &Request) -> Option<String> {
    let id = req.headers().get("x-request-id")?.to_str().ok()?;
    let sane = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        && !super::redact::holds_secret(id);
    sane.then(|| id.to_owned())
}

impl<E: Endpoint> EdgeInner<E> {
    /// `request_id`: the client's `X-Request-Id` when it is sane, else a new one.
    async fn handle(&self, mut req: Request, request_id: String) -> Response {
        let started = Instant::now();
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        // Every line of the header, in order: a proxy may add its own line after the client's.
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let audit = self.audit.as_ref().filter(|_| path.starts_with("/api/"));
        let context = RequestContext {
            request_id: request_id.clone(),
            ip: client_ip(peer, forwarded.as_deref(), &self.trusted_proxies)
                .map(|ip| ip.to_string()),
            // As sent when it is UTF-8 (bytes that are not become U+FFFD), so a client whose
            // agent names itself outside ASCII is still recorded; a credential in it redacted
            // before it is cut, so no part of one is kept (in the record or an event).
            user_agent: req.headers().get(header::USER_AGENT).map(|ua| {
                let ua = String::from_utf8_lossy(ua.as_bytes());
                super::redact::redact_secrets(&ua)
                    .chars()
                    .take(512)
                    .collect()
            }),
            state_changing: !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS),
            csrf_token: req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            notes: Default::default(),
        };
        let notes = context.notes.clone();
        let (context_ip, user_agent) = (context.ip.clone(), context.user_agent.clone());
        let declared_bytes = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        // Kept for a record to name the caller of a refusal made before any handler.
        let presented = match audit {
            Some(_) => CredentialHeaders::of(req.headers()),
            None => CredentialHeaders::default(),
        };
        req.set_data(context.clone());
        let streamed = self.streamed.for_request(&req);
        let meter = Arc::new(Meter::default());
        // The body's size as read (a chunked body declares none).
        let mut read_bytes = 0;
        let response = REQUEST
            .scope(context, async {
                let timeout = match streamed {
                    Some(_) => self.streamed.timeout,
                    None => self.timeout,
                };
                let deadline = tokio::time::Instant::now() + timeout;
                let body = match streamed {
                    Some(limit) => {
                        Ok(limit_streamed(&mut req, limit, meter.clone()).map_or(Ok(()), Err))
                    }
                    None => {
                        let read = tokio::time::timeout_at(deadline, self.limit_body(&mut req));
                        match read.await {
                            Ok(Ok(read)) => {
                                read_bytes = read;
                                Ok(Ok(()))
                            }
                            Ok(Err((refused, read))) => {
                                read_bytes = read;
                                Ok(Err(refused))
                            }
                            Err(elapsed) => Err(elapsed),
                        }
                    }
                };
                // A body refused before any handler (too slow, too large, unreadable) spends
                // the client IP's budget, as below.
                match body {
                    Err(_) => {
                        return self
                            .spend_ip_budget(
                                &presented,
                                timeout_problem(
                                    StatusCode::REQUEST_TIMEOUT,
                                    "the request body arrived too slowly",
                                ),
                            )
                            .await
                    }
                    Ok(Err(refused)) => return self.spend_ip_budget(&presented, refused).await,
                    Ok(Ok(())) => {}
                }
                if let Some(refused) = super::nul_text::refusal(req.uri()) {
                    return self.spend_ip_budget(&presented, refused).await;
                }
                // A handler that panics is answered (500) and recorded like any failure.
                let call = std::panic::AssertUnwindSafe(self.inner.call(req)).catch_unwind();
                let answer = tokio::time::timeout_at(deadline, call).await;
                if meter.exceeded.load(Ordering::Relaxed) {
                    return too_large(streamed.unwrap_or_default());
                }
                let (response, message) = match answer {
                    Ok(Err(panic)) => return panicked(panic.as_ref()),
                    Ok(Ok(Ok(output))) => (output.into_response(), None),
                    Ok(Ok(Err(error))) => {
                        let message = error.to_string();
                        let message = name_path_params(message, self.routes.route_of(&path));
                        (error.into_response(), Some(message))
                    }
                    Err(_) => {
                        return timeout_problem(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the request took too long and was abandoned",
                        )
                    }
                };
                // No handler checked any credentials (none sent, input that does not parse, no
                // such route): the refusal spends the client IP's budget.
                let before_handler = refused_before_handler(&response);
                let mut response = as_problem(response, message).await;
                if response.status() == StatusCode::METHOD_NOT_ALLOWED {
                    let allow = self.routes.allow_of(&path).and_then(|a| a.parse().ok());
                    if let Some(allow) = allow {
                        response.headers_mut().insert(header::ALLOW, allow);
                    }
                }
                if before_handler {
                    return self.spend_ip_budget(&presented, response).await;
                }
                response
            })
            .await;
        let mut response = response;
        let mut notes = std::mem::take(&mut *notes.lock().expect("request notes lock"));
        let rate = notes.rate.take();
        // The path as the record and the log line show it: credentials redacted, length bounded.
        let shown_path = super::request_log::bounded(&super::redact::redact_secrets(&path));
        let shown_method = super::request_log::bounded_method(method.as_str());
        if let Some(audit) = audit {
            let seen = super::request_log::Seen {
                request_id: &request_id,
                method: shown_method,
                path: &shown_path,
                route: self.routes.route_of(&path),
                started,
                client_ip: context_ip,
                user_agent,
                request_bytes: declared_bytes
                    .max(read_bytes as i64)
                    .max(meter.read.load(Ordering::Relaxed) as i64),
            };
            response = super::request_log::record(audit, seen, notes, response).await;
        }
        // After recording, so an answer withheld for want of its record carries them too.
        set_request_id(&mut response, &request_id);
        security_headers(&path, &mut response);
        if let Some(headers) = &rate {
            headers.apply(&mut response);
        }
        tracing::info!(
            http.method = %shown_method,
            http.path = %shown_path,
            http.status = response.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = %request_id,
            "request"
        );
        response
    }
}

impl<E> EdgeInner<E> {
    /// `refusal`, made before any handler checked credentials, counted against the client
    /// IP's budget: or the 429 that replaces it once the IP is over that budget. The record
    /// names the caller whose valid credentials the request presented, if any; over the budget
    /// only a key this replica has cached (so a flood of such requests does not look keys up).
    async fn spend_ip_budget(&self, presented: &CredentialHeaders, refusal: Response) -> Response {
        match self.state.refuse_anonymous().await {
            Some(over_budget) => {
                self.state.note_presented_cached(presented);
                over_budget
            }
            None => {
                self.state.note_presented(presented).await;
                refusal
            }
        }
    }

    /// Reads the body up to the limit, so handlers never see more than `max_body_bytes`: its
    /// size, or the refusal and what the body is known to have held (a body without a declared
    /// length that ran over it: one byte over).
    async fn limit_body(&self, req: &mut Request) -> Result<usize, (Response, usize)> {
        let refuse = || (too_large(self.max_body_bytes as u64), 0);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > self.max_body_bytes) {
            return Err(refuse());
        }
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(0);
        }
        match req.take_body().into_bytes_limit(self.max_body_bytes).await {
            Ok(bytes) => {
                let read = bytes.len();
                req.set_body(bytes);
                Ok(read)
            }
            Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                Err((refuse().0, self.max_body_bytes + 1))
            }
            Err(_) => Err((
                problem_response(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "BODY_UNREADABLE",
                    "the request body could not be read",
                )),
                0,
            )),
        }
    }
}
