//! `Idempotency-Key` on POST requests: the first request with a key runs and its answer
//! (status, content type, `Location`, body) is stored; the same key with the same request
//! answers that again without running anything (`Idempotent-Replayed: true`); with a different
//! request it answers 422, and while the first is still running, 409. A claim left without an
//! answer (a call abandoned at its timeout, or a server that died) is taken over by the same
//! request once that call can no longer be running (`abandoned_after`). Keys are scoped to the
//! credentials presented (a hash of them, never the credentials), up to 255 characters, and
//! kept for 24 hours (`expiry`). Credentials are checked before a claim is written
//! (`AppState::screen`), so a request refused for them writes nothing; a 5xx, 401, 403, 409 or
//! 429 answer is not kept either, so the request can be retried. A replay is authenticated and
//! counted against the caller's rate limits like any request (`AppState::admit_replay`), and
//! recorded in the project the first request acted in. `request_hash` owns what makes two
//! requests the same; `sealed` keeps the stored bodies unreadable at rest.

mod expiry;
mod request_hash;
mod sealed;

pub use expiry::{forget_expired, forget_periodically};
pub use sealed::AnswerSeal;

use std::sync::Arc;
use std::time::Duration;

use poem::http::{header, HeaderValue, Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use sqlx::PgPool;

use super::edge_problems::{before_handler, problem_response, refused_before_handler};
use super::problem::Problem;
use super::request_context::{note_project, recorded_project};
use super::streamed_body::StreamedLimits;
use crate::state::AppState;
use request_hash::{hex_sha256, spool};

pub struct Idempotency {
    /// Where keys are stored, and who authenticates a replay.
    pub state: Arc<AppState>,
    /// How long the edge lets a call run: `timeout`, or `streamed.timeout` for the calls that
    /// stream a file in.
    pub timeout: Duration,
    pub streamed: StreamedLimits,
}

impl<E: Endpoint> Middleware<E> for Idempotency {
    type Output = IdempotencyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        IdempotencyEndpoint {
            inner,
            pool: self.state.pool.clone(),
            timeout: self.timeout,
            streamed: self.streamed.clone(),
            state: self.state.clone(),
        }
    }
}

pub struct IdempotencyEndpoint<E> {
    inner: E,
    pool: PgPool,
    timeout: Duration,
    streamed: StreamedLimits,
    state: Arc<AppState>,
}

impl<E> IdempotencyEndpoint<E> {
    /// How old a claim of `req`'s key, made by the same request and still without an answer,
    /// must be before `req` may take it over: by then that call will never answer, since the
    /// edge abandons a call at its timeout (and a server that died left the claim behind). A
    /// minute more covers work the call had queued (an append in a group commit) landing just
    /// after it was abandoned.
    fn abandoned_after(&self, req: &Request) -> Duration {
        let call = match self.streamed.for_request(req) {
            Some(_) => self.streamed.timeout,
            None => self.timeout,
        };
        call + Duration::from_secs(60)
    }
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    problem_response(Problem::new(status, code, detail))
}

#[derive(sqlx::FromRow)]
struct Stored {
    request_hash: String,
    status: Option<i32>,
    content_type: Option<String>,
    location: Option<String>,
    body: Option<Vec<u8>>,
    body_sealed: bool,
    project_id: Option<uuid::Uuid>,
}

impl<E: Endpoint> Endpoint for IdempotencyEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let keyed = req.method() == Method::POST
            && req.uri().path().starts_with("/api/v1/")
            && !req.uri().path().starts_with("/api/v1/auth/");
        let Some(key) = keyed
            .then(|| req.headers().get("idempotency-key").cloned())
            .flatten()
        else {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        };
        let key = match key.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 255 => key.to_owned(),
            _ => {
                return Ok(before_handler(problem(
                    StatusCode::BAD_REQUEST,
                    "INVALID_IDEMPOTENCY_KEY",
                    "Idempotency-Key must be 1-255 visible ASCII characters",
                )))
            }
        };
        // Credentials the handler would refuse write no claim, nor is the body read: the
        // refusal is the answer now.
        if let Err(refusal) = self.state.screen(req.headers()).await {
            return Ok(refusal);
        }
        let credentials: Vec<&[u8]> = ["x-api-key", "authorization", "cookie"]
            .iter()
            .map(|h| req.headers().get(*h).map_or(&b""[..], |v| v.as_bytes()))
            .collect();
        let scope = hex_sha256(&credentials);
        let request_hash = if crate::http::payloads::is_form(&req) {
            match spool(&mut req).await {
                Ok(hash) => hash,
                Err(_) => {
                    return Ok(before_handler(problem(
                        StatusCode::BAD_REQUEST,
                        "BODY_UNREADABLE",
                        "the request body could not be read",
                    )))
                }
            }
        } else {
            let body = req.take_body().into_bytes().await.unwrap_or_default();
            let hash = hex_sha256(&[req.uri().path().as_bytes(), &body]);
            req.set_body(body);
            hash
        };
        // A new claim, or the same request's claim taken over from a call that will never answer.
        let abandoned_after = self.abandoned_after(&req);
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, key) DO UPDATE SET created_at = now() \
              WHERE idempotency_keys.status IS NULL \
                AND idempotency_keys.request_hash = excluded.request_hash \
                AND idempotency_keys.created_at < now() - make_interval(secs => $4)",
        )
        .bind(&scope)
        .bind(&key)
        .bind(&request_hash)
        .bind(abandoned_after.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(poem::error::InternalServerError)?
        .rows_affected()
            == 1;
        if !claimed {
            // No handler runs: the credentials are checked (and the request counted) here.
            if let Err(refusal) = self.state.admit_replay(req.headers()).await {
                return Ok(refusal);
            }
            let stored: Option<Stored> = sqlx::query_as(
                "SELECT request_hash, status, content_type, location, body, body_sealed, project_id \
                   FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .bind(&scope)
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(poem::error::InternalServerError)?;
            return Ok(match stored {
                Some(stored) if stored.request_hash != request_hash => problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used with a different request",
                ),
                Some(Stored {
                    status: Some(status),
                    content_type,
                    location,
                    body,
                    body_sealed,
                    project_id,
                    ..
                }) => {
                    if let Some(project) = project_id {
                        note_project(project);
                    }
                    let body = body.unwrap_or_default();
                    let body = if body_sealed {
                        let Some(opened) = self.state.answer_seal.open(&scope, &key, &body) else {
                            // Sealed under another pepper, or altered: nothing true to replay,
                            // and running the request again could do it twice.
                            tracing::error!("a kept idempotent answer does not open");
                            return Ok(problem(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "IDEMPOTENT_ANSWER_UNREADABLE",
                                "the first request with this Idempotency-Key ran, but its kept \
                                 answer cannot be read by this server; the key stays used until \
                                 it expires",
                            ));
                        };
                        opened
                    } else {
                        body
                    };
                    let mut response = Response::builder()
                        .status(StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK))
                        .header("idempotent-replayed", "true")
                        .body(body);
                    for (name, value) in [
                        (header::CONTENT_TYPE, content_type),
                        (header::LOCATION, location),
                    ] {
                        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                            response.headers_mut().insert(name, value);
                        }
                    }
                    response
                }
                _ => problem(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_IN_USE",
                    "a request with this Idempotency-Key is still running; retry later",
                ),
            });
        }
        let mut response = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let status = response.status();
        // Failures that a retry may get past are not kept: server errors, rate limits,
        // conflicts; nor are refused credentials (a refused request leaves nothing behind), nor
        // input refused before any handler ran (nothing was executed to be replayed).
        if status.is_server_error()
            || refused_before_handler(&response)
            || matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::CONFLICT
                    | StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
            )
        {
            let released =
                sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
                    .bind(&scope)
                    .bind(&key)
                    .execute(&self.pool)
                    .await;
            if let Err(error) = released {
                // The claim stays: a retry with this key gets 409 until the claim counts as
                // abandoned (`abandoned_after`).
                tracing::warn!(%error, "could not release an idempotency key after a refusal");
            }
            return Ok(response);
        }
        let body = response.take_body().into_bytes().await.unwrap_or_default();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        sqlx::query(
            "UPDATE idempotency_keys \
                SET status = $3, content_type = $4, location = $5, body = $6, project_id = $7, \
                    body_sealed = true \
              WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .bind(i32::from(status.as_u16()))
        .bind(header_text(header::CONTENT_TYPE))
        .bind(header_text(header::LOCATION))
        .bind(self.state.answer_seal.seal(&scope, &key, &body))
        .bind(recorded_project())
        .execute(&self.pool)
        .await
        .map_err(poem::error::InternalServerError)?;
        response.set_body(body);
        Ok(response)
    }
}
