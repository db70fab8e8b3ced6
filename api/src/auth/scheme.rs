//! The security schemes: `X-API-Key: <key>`, `Authorization: Bearer <key or access token>`, or
//! the `herald_session` cookie set by a browser login. Credentials are only ever read from
//! headers and cookies, never from the query string.

use poem::http::HeaderMap;
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::SecurityScheme;

/// An API key in the `X-API-Key` header.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header")]
pub struct ApiKeyHeader(ApiKey);

/// An API key, or a user's access token from `POST /api/v1/auth/login`, as a bearer token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "API key or JWT")]
pub struct BearerToken(Bearer);

/// A browser session (`POST /api/v1/auth/login` with `"cookie": true`). State-changing requests
/// must also send `X-CSRF-Token` from `GET /api/v1/csrf-token`.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "herald_session", key_in = "cookie")]
pub struct SessionCookie(ApiKey);

/// Any way of presenting credentials.
#[derive(SecurityScheme)]
pub enum Credentials {
    ApiKey(ApiKeyHeader),
    Bearer(BearerToken),
    Cookie(SessionCookie),
}

/// What was presented, and how.
pub enum Presented<'a> {
    Key(&'a str),
    Token(&'a str),
    Cookie(&'a str),
}

impl Credentials {
    /// The credentials in raw request headers, found in the order the OpenAPI schemes are
    /// tried (for requests no operation extracts them from).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(key) = text("x-api-key") {
            return Some(Credentials::ApiKey(ApiKeyHeader(ApiKey {
                key: key.into(),
            })));
        }
        let bearer = text("authorization").and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        if let Some(token) = bearer {
            let bearer = Bearer {
                token: token.into(),
            };
            return Some(Credentials::Bearer(BearerToken(bearer)));
        }
        let session = headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "herald_session")
            .map(|(_, value)| value.to_owned())?;
        Some(Credentials::Cookie(SessionCookie(ApiKey { key: session })))
    }

    pub fn presented(&self) -> Presented<'_> {
        match self {
            Credentials::ApiKey(ApiKeyHeader(key)) => Presented::Key(&key.key),
            Credentials::Bearer(BearerToken(bearer)) if bearer.token.starts_with("hrld_") => {
                Presented::Key(&bearer.token)
            }
            Credentials::Bearer(BearerToken(bearer)) => Presented::Token(&bearer.token),
            Credentials::Cookie(SessionCookie(cookie)) => Presented::Cookie(&cookie.key),
        }
    }
}

/// Credentials where they are optional (registration is open to admins and, when configured,
/// to anyone).
#[derive(SecurityScheme)]
pub enum MaybeCredentials {
    ApiKey(ApiKeyHeader),
    Bearer(BearerToken),
    Cookie(SessionCookie),
    #[oai(fallback)]
    Anonymous,
}

impl MaybeCredentials {
    pub fn into_credentials(self) -> Option<Credentials> {
        match self {
            MaybeCredentials::ApiKey(key) => Some(Credentials::ApiKey(key)),
            MaybeCredentials::Bearer(bearer) => Some(Credentials::Bearer(bearer)),
            MaybeCredentials::Cookie(cookie) => Some(Credentials::Cookie(cookie)),
            MaybeCredentials::Anonymous => None,
        }
    }
}
