//! Errors as RFC 9457 `application/problem+json`.
//!
//! Handlers return `ApiError`, one enum for the whole API that knows nothing about HTTP beyond
//! its status class; it is mapped to a `Problem` body exactly once, here. 4xx answers carry a
//! stable UPPER_SNAKE `code` and a message meant for the caller; 5xx answers log the cause and
//! return an opaque body. `ErrorResponse` is the OpenAPI-visible response type.

use herald_domain::FieldError;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use super::context::current_request_id;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Problem {
    /// A URI reference identifying the problem type.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable machine-readable code, UPPER_SNAKE.
    pub code: String,
    /// The request's id (also in the `X-Request-Id` header).
    pub request_id: String,
    /// Field-level problems, for validation errors; left out when there are none.
    #[oai(default, skip_serializing_if_is_empty)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
    /// For 429: the rate-limit policies the request exceeded; left out otherwise.
    #[oai(rename = "violated-policies", default, skip_serializing_if_is_empty)]
    #[serde(rename = "violated-policies", skip_serializing_if = "Vec::is_empty")]
    pub violated_policies: Vec<String>,
}

#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ProblemField {
    /// The request field, as a dotted path (`metadata.team`).
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!(
                "https://herald.dev/problems/{}",
                code.to_lowercase().replace('_', "-")
            ),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.to_owned(),
            request_id: current_request_id(),
            errors: Vec::new(),
            violated_policies: Vec::new(),
        }
    }

    /// For a problem built outside the request's scope, where its id is no longer current.
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        request_id.clone_into(&mut self.request_id);
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors
            .into_iter()
            .map(|e| ProblemField {
                field: e.field,
                message: e.message,
            })
            .collect();
        self
    }
}

/// Every way a request can fail, independent of the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown, expired or revoked credentials: one identical answer.
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    /// A cookie session sent a state-changing request without its `X-CSRF-Token`.
    #[error("missing or wrong CSRF token")]
    CsrfRequired,
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_seconds: u64,
        violated: Vec<String>,
    },
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    /// The resource existed and is gone for good (an expired job's files).
    #[error("{detail}")]
    Gone { code: &'static str, detail: String },
    /// Well-formed, but the resource cannot be processed as asked.
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound {
            code: "NOT_FOUND",
            detail: format!("{what} not found"),
        }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(error.into())
    }

    pub fn field(field: &str, message: &str) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::Validation(vec![error])
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        ApiError::Internal(error.into())
    }
}

/// The body of a 401: identical whatever was wrong with the credentials.
pub fn unauthenticated_problem() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "valid credentials are required (X-API-Key, Authorization: Bearer, or a session cookie)",
    )
}

/// Error answers as documented in the OpenAPI document.
#[derive(ApiResponse, Debug)]
pub enum ErrorResponse {
    /// The request is malformed or has invalid fields.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(Json<Problem>),
    /// Missing or invalid credentials.
    #[oai(status = 401, content_type = "application/problem+json")]
    Unauthorized(Json<Problem>, #[oai(header = "WWW-Authenticate")] String),
    /// The credentials lack a scope, or the client IP is not allowed.
    #[oai(status = 403, content_type = "application/problem+json")]
    Forbidden(Json<Problem>),
    /// No such resource (or not visible to the caller).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    /// The resource's state does not allow the operation.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(Json<Problem>),
    /// The resource is gone for good.
    #[oai(status = 410, content_type = "application/problem+json")]
    Gone(Json<Problem>),
    /// The request cannot be processed as asked.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(Json<Problem>),
    /// Too many attempts; retry after `Retry-After` seconds.
    #[oai(status = 429, content_type = "application/problem+json")]
    TooManyRequests(Json<Problem>, #[oai(header = "Retry-After")] u64),
    /// The server failed; the body is opaque and the cause is logged.
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unauthenticated => ErrorResponse::Unauthorized(
                Json(unauthenticated_problem()),
                r#"Bearer realm="herald", ApiKey header="X-API-Key""#.to_owned(),
            ),
            ApiError::Forbidden(detail) => ErrorResponse::Forbidden(Json(Problem::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                detail,
            ))),
            ApiError::CsrfRequired => ErrorResponse::Forbidden(Json(Problem::new(
                StatusCode::FORBIDDEN,
                "CSRF_TOKEN_REQUIRED",
                "cookie sessions must send X-CSRF-Token (from GET /api/v1/csrf-token) on state-changing requests",
            ))),
            ApiError::TooManyRequests {
                detail,
                retry_after_seconds,
                violated,
            } => ErrorResponse::TooManyRequests(
                Json(Problem {
                    violated_policies: violated,
                    ..Problem::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMIT_EXCEEDED", detail)
                }),
                retry_after_seconds.max(1),
            ),
            ApiError::NotFound { code, detail } => {
                ErrorResponse::NotFound(Json(Problem::new(StatusCode::NOT_FOUND, code, detail)))
            }
            ApiError::Conflict { code, detail } => {
                ErrorResponse::Conflict(Json(Problem::new(StatusCode::CONFLICT, code, detail)))
            }
            ApiError::Validation(errors) => ErrorResponse::BadRequest(Json(
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_FAILED",
                    "the request has invalid fields",
                )
                .with_errors(errors),
            )),
            ApiError::BadRequest { code, detail } => {
                ErrorResponse::BadRequest(Json(Problem::new(StatusCode::BAD_REQUEST, code, detail)))
            }
            ApiError::Gone { code, detail } => {
                ErrorResponse::Gone(Json(Problem::new(StatusCode::GONE, code, detail)))
            }
            ApiError::Unprocessable { code, detail } => ErrorResponse::Unprocessable(Json(
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail),
            )),
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                ErrorResponse::Internal(Json(Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "the server failed to handle this request; quote the request id to support",
                )))
            }
        }
    }
}

/// Handler result type: success, or a problem+json answer.
pub type ApiResult<T> = Result<T, ErrorResponse>;

impl From<sqlx::Error> for ErrorResponse {
    fn from(error: sqlx::Error) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldError> for ErrorResponse {
    fn from(error: FieldError) -> Self {
        ApiError::from(error).into()
    }
}
