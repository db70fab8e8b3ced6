//! Authentication of the requests no handler sees, and of those that may come without
//! credentials. A request refused before any handler checks its credentials (none presented, a
//! body or parameter that does not parse, a body too large or too slow, no such route) is
//! counted against the client IP's `unauthenticated` budget here, when the edge asks, as is an
//! open registration without credentials. An idempotent replay is answered by the
//! `Idempotency-Key` middleware from its store, so its credentials are checked, and the request
//! counted against the caller's limits, here before the stored answer goes out. And that
//! middleware screens a request's credentials before it writes a claim, so a request refused
//! for them writes nothing. A refusal made before any handler still names, in the request log,
//! the caller whose valid credentials it presented.

use poem::http::header::{AUTHORIZATION, COOKIE};
use poem::http::{HeaderMap, HeaderName, HeaderValue};
use poem::{IntoResponse, Response};

use super::scheme::{Credentials, Presented};
use super::verifier::Refusal;
use crate::http::context::current_client_ip;
use crate::http::problem::{ApiError, ErrorResponse};
use crate::state::AppState;

impl AppState {
    /// For a request refused before any handler (no credentials, input that does not parse, no
    /// such route): the 429 that replaces its refusal once the client IP is over its budget,
    /// else `None` (the refusal stands).
    pub async fn refuse_anonymous(&self) -> Option<Response> {
        self.spend_anonymous().await.err().map(answer)
    }

    /// For a request refused before any handler: names in the request log the caller whose
    /// credentials it presented, when they are valid, so that a caller's malformed calls are
    /// found under its id too. The request still spends the client IP's budget, not the
    /// caller's: no handler accepted it.
    pub async fn note_presented(&self, presented: &CredentialHeaders) {
        let Some(credentials) = Credentials::from_headers(&presented.to_map()) else {
            return;
        };
        if let Ok(caller) = self.identify(&credentials).await {
            caller.note_as_actor();
        }
    }

    /// As `note_presented`, for a request whose client IP is over its budget: only an API key
    /// already in this replica's cache is named (checked as usual, without a lookup), so a
    /// flood of such requests never reaches the database.
    pub fn note_presented_cached(&self, presented: &CredentialHeaders) {
        let Some(credentials) = Credentials::from_headers(&presented.to_map()) else {
            return;
        };
        if let Presented::Key(key) = credentials.presented() {
            match self.verifier.verify_cached(key, current_client_ip()) {
                Ok(caller) => caller.note_as_actor(),
                Err(Refusal::IpNotAllowed(caller)) => caller.note_as_actor(),
                Err(Refusal::Unauthenticated) => {}
            }
        }
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

/// The headers that can carry credentials, kept from a request (a header value shares its
/// bytes, so keeping one copies nothing) in case it is refused before any handler reads them.
/// Of several `Cookie` lines, the first.
#[derive(Debug, Default)]
pub struct CredentialHeaders([Option<HeaderValue>; 3]);

impl CredentialHeaders {
    fn names() -> [HeaderName; 3] {
        [HeaderName::from_static("x-api-key"), AUTHORIZATION, COOKIE]
    }

    pub fn of(headers: &HeaderMap) -> Self {
        CredentialHeaders(Self::names().map(|name| headers.get(name).cloned()))
    }

    fn to_map(&self) -> HeaderMap {
        Self::names()
            .into_iter()
            .zip(&self.0)
            .filter_map(|(name, value)| Some((name, value.clone()?)))
            .collect()
    }
}
