//! The problem+json answers the edge gives: the response for a `Problem` (with
//! `WWW-Authenticate` on 401), and the rewriting of every error response that did not come
//! from a handler as problem+json (unknown route, wrong method, unsupported content type,
//! unparsable parameters or body, missing credentials), plus the edge's own refusals (a body
//! too large, a request too slow).

use herald_domain::FieldError;
use poem::http::{header, StatusCode};
use poem::Response;

use super::problem::{unauthenticated_problem, Problem};

pub(super) fn too_large(limit: u64) -> Response {
    problem_response(Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("this request's body is limited to {limit} bytes"),
    ))
}

pub(super) fn timeout_problem(status: StatusCode, detail: &str) -> Response {
    problem_response(Problem::new(status, "REQUEST_TIMEOUT", detail))
}

/// The answer to a call abandoned because the process is stopping (`SHUTTING_DOWN`), outside
/// the request's scope, so its id is given.
pub(super) fn abandoned(request_id: &str) -> Response {
    let problem = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SHUTTING_DOWN",
        "the server stopped before this request was answered",
    );
    let mut response = problem_response(problem.with_request_id(request_id));
    set_request_id(&mut response, request_id);
    response
}

/// `X-Request-Id`, on every answer the edge gives.
pub(super) fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
}

/// The answer to a call whose handler panicked: 500 `INTERNAL`, the panic logged.
pub(super) fn panicked(panic: &(dyn std::any::Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a handler panicked");
    problem_response(Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the server failed to handle this request",
    ))
}

/// The `application/problem+json` response for `problem`, with `WWW-Authenticate` on 401.
pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(serde_json::to_vec(&problem).unwrap_or_default());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static(
                r#"Bearer realm="herald", ApiKey header="X-API-Key""#,
            ),
        );
    }
    response
}

/// Marks a refusal an extractor made (a body that does not parse) before any handler could
/// check the caller's credentials, though it is problem+json already.
#[derive(Debug, Clone, Copy)]
pub(super) struct BeforeHandler;

/// Marks `response` as a refusal made before any handler could check credentials.
pub(super) fn before_handler(mut response: Response) -> Response {
    response.extensions_mut().insert(BeforeHandler);
    response
}

/// A client error no handler answered: the extractors' own (`BeforeHandler`) and every one
/// that is not problem+json yet (no credentials, a parameter that does not parse, no route).
pub(super) fn refused_before_handler(response: &Response) -> bool {
    response.status().is_client_error()
        && (!is_problem(response) || response.data::<BeforeHandler>().is_some())
}

pub(super) fn is_problem(response: &Response) -> bool {
    response
        .content_type()
        .is_some_and(|ct| ct.starts_with("application/problem+json"))
}

/// Leaves problem+json and successful responses alone; rewrites any other error response.
pub(super) async fn as_problem(response: Response, message: Option<String>) -> Response {
    let status = response.status();
    if status.as_u16() < 400 || is_problem(&response) {
        return response;
    }
    let message = match message {
        Some(message) => message,
        None => response.into_body().into_string().await.unwrap_or_default(),
    };
    problem_response(problem_for(status, &message))
}

fn problem_for(status: StatusCode, message: &str) -> Problem {
    match status {
        StatusCode::UNAUTHORIZED => unauthenticated_problem(),
        StatusCode::BAD_REQUEST => {
            let (code, detail) = if message.contains("payload") {
                (
                    "INVALID_BODY",
                    "the request body is not valid JSON for this endpoint",
                )
            } else {
                ("INVALID_PARAMETER", "a path or query parameter is invalid")
            };
            Problem::new(status, code, detail)
                .with_errors(vec![FieldError::new(field_of(message), message)])
        }
        StatusCode::NOT_FOUND => Problem::new(status, "NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "METHOD_NOT_ALLOWED",
            "this route does not accept the method",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(status, "PAYLOAD_TOO_LARGE", "the request body is too large")
        }
        s if s.is_server_error() => {
            tracing::error!(status = s.as_u16(), error = message, "request failed");
            Problem::new(s, "INTERNAL", "the server failed to handle this request")
        }
        s => Problem::new(s, "REQUEST_REFUSED", message),
    }
}

/// `message` with poem-openapi's own names for path parameters (`param0`, `param1`, … in the
/// order they appear) replaced by the names `route` gives them (`/api/v1/jobs/{id}`: `id`).
pub(super) fn name_path_params(message: String, route: &str) -> String {
    let names = route
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'));
    names.enumerate().fold(message, |message, (n, name)| {
        message.replace(&format!("`param{n}`"), &format!("`{name}`"))
    })
}

/// Best-effort field name from a poem-openapi parse error ("... `kind` ..." or "\"kind\"").
fn field_of(message: &str) -> String {
    for quote in ['`', '"'] {
        let mut parts = message.split(quote);
        if let (Some(_), Some(name)) = (parts.next(), parts.next()) {
            if !name.is_empty() && name.len() < 64 && !name.contains(' ') {
                return name.to_owned();
            }
        }
    }
    "body".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_named_as_the_route_names_them() {
        let message = "failed to parse parameter `param1`: not a UUID".to_owned();
        let named = name_path_params(message, "/api/v1/projects/{project}/members/{user}");
        assert_eq!(named, "failed to parse parameter `user`: not a UUID");
        assert_eq!(field_of(&named), "user");
        let unmatched = name_path_params("`param0`".into(), "unmatched");
        assert_eq!(unmatched, "`param0`");
    }
}
