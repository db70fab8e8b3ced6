//! The security schemes: `X-API-Key: <key>` or `Authorization: Bearer <key>`. Keys are only
//! ever read from headers, never from the query string.

use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::SecurityScheme;

/// An API key in the `X-API-Key` header.
#[derive(SecurityScheme)]
#[oai(ty = "api_key", key_name = "X-API-Key", key_in = "header")]
pub struct ApiKeyHeader(ApiKey);

/// An API key as a bearer token.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct BearerToken(Bearer);

/// Either way of presenting a key.
#[derive(SecurityScheme)]
pub enum Credentials {
    ApiKey(ApiKeyHeader),
    Bearer(BearerToken),
}

impl Credentials {
    /// The presented key, unverified.
    pub fn presented(&self) -> &str {
        match self {
            Credentials::ApiKey(ApiKeyHeader(key)) => &key.key,
            Credentials::Bearer(BearerToken(bearer)) => &bearer.token,
        }
    }
}
