//! Authentication of the requests no handler sees, and of those that may come without
//! credentials. A request refused before any handler checks its credentials (none presented, a
//! body or parameter that does not parse, a body too large or too slow, no such route) is
//! counted against the client IP's `unauthenticated` budget here, when the edge asks, as is an
//! open registration without credentials. An idempotent replay is answered by the
//! `Idempotency-Key` middleware from its store, so its credentials are checked, and the request
//! counted against the caller's limits, here before the stored answer goes out. And that
//! middleware screens a request's credentials before it writes a claim, so a request refused
//! for them writes nothing.

use poem::http::HeaderMap;
use poem::{IntoResponse, Response};

use super::scheme::Credentials;
use crate::http::problem::{ApiError, ErrorResponse};
use crate::state::AppState;

impl AppState {
    /// For a request refused before any handler (no credentials, input that does not parse, no
    /// such route): the 429 that replaces its refusal once the client IP is over its budget,
    /// else `None` (the refusal stands).
    pub async fn refuse_anonymous(&self) -> Option<Response> {
        self.spend_anonymous().await.err().map(answer)
    }

    /// Counts a request that came without credentials where none are required (open
    /// registration) against the client IP's budget: `Err` is the 429 once over it.
    pub async fn spend_anonymous(&self) -> Result<(), ApiError> {
        match self.refuse_unauthenticated().await {
            refusal @ ApiError::TooManyRequests { .. } => Err(refusal),
            _ => Ok(()),
        }
    }

    /// Authenticates the request an idempotent replay is about to answer, and counts it
    /// against its caller's limits: `Err` is the answer instead (401, 403 or 429).
    pub async fn admit_replay(&self, headers: &HeaderMap) -> Result<(), Response> {
        let credentials = self.presented(headers).await?;
        self.authenticate(&credentials)
            .await
            .map(drop)
            .map_err(answer)
    }

    /// Checks a request's credentials before an `Idempotency-Key` claim is written for it:
    /// `Err` is the refusal the handler would have given (401 or 403, or 429 once the client
    /// IP is over its budget, which this spends as the handler would). Accepted credentials are
    /// not counted here: the handler authenticates the request, and counts it, as usual.
    pub async fn screen(&self, headers: &HeaderMap) -> Result<(), Response> {
        let credentials = self.presented(headers).await?;
        match self.identify(&credentials).await {
            Ok(_) => Ok(()),
            Err(refusal) => Err(answer(self.refused(refusal).await)),
        }
    }

    /// The credentials a request presents, or the refusal of a request that presents none.
    async fn presented(&self, headers: &HeaderMap) -> Result<Credentials, Response> {
        let Some(credentials) = Credentials::from_headers(headers) else {
            return Err(self
                .refuse_anonymous()
                .await
                .unwrap_or_else(|| answer(ApiError::Unauthenticated)));
        };
        Ok(credentials)
    }
}

fn answer(refusal: ApiError) -> Response {
    ErrorResponse::from(refusal).into_response()
}
