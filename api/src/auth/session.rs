//! Access tokens for logged-in users: compact JWTs signed with HMAC-SHA256 under a key derived
//! from the server secret. Only the one header Herald issues is accepted (no `alg` choice is
//! left to the token), and a token names its session (`sid`), so ending the session ends the
//! token. The CSRF token of a cookie session is an HMAC of its session id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use herald_domain::{SessionId, UserId};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The name of the browser session cookie.
pub const COOKIE_NAME: &str = "herald_session";

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: UserId,
    pub sid: SessionId,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks session tokens and CSRF tokens.
pub struct SessionKeys {
    jwt: Vec<u8>,
    csrf: Vec<u8>,
}

impl SessionKeys {
    /// Derives the signing keys from the server secret (the API-key pepper), one per purpose.
    pub fn derive(secret: &[u8]) -> Self {
        Self {
            jwt: mac(secret, b"herald session token v1"),
            csrf: mac(secret, b"herald csrf token v1"),
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let signing_input = format!("{header}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(mac(&self.jwt, signing_input.as_bytes()));
        format!("{signing_input}.{signature}")
    }

    /// The claims of a token signed by us and not expired at `now`.
    pub fn check(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if header != URL_SAFE_NO_PAD.encode(HEADER) {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = mac(&self.jwt, signing_input.as_bytes());
        if !bool::from(expected.ct_eq(&signature)) {
            return None;
        }
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (now.timestamp() < claims.exp).then_some(claims)
    }

    pub fn csrf_token(&self, session: SessionId) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.csrf, session.as_uuid().as_bytes()))
    }

    pub fn csrf_matches(&self, session: SessionId, presented: &str) -> bool {
        let expected = self.csrf_token(session);
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }
}

fn mac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn claims(exp: DateTime<Utc>) -> Claims {
        Claims {
            sub: UserId::generate(),
            sid: SessionId::generate(),
            iat: exp.timestamp() - 60,
            exp: exp.timestamp(),
        }
    }

    #[test]
    fn a_token_checks_until_it_expires() {
        let keys = SessionKeys::derive(b"a server secret of some length");
        let now = Utc::now();
        let issued = claims(now + Duration::minutes(5));
        let token = keys.issue(&issued);
        assert_eq!(keys.check(&token, now), Some(issued));
        assert_eq!(keys.check(&token, now + Duration::minutes(5)), None);
    }

    #[test]
    fn tampered_foreign_and_unsigned_tokens_are_refused() {
        let keys = SessionKeys::derive(b"a server secret of some length");
        let now = Utc::now();
        let token = keys.issue(&claims(now + Duration::minutes(5)));
        let other = SessionKeys::derive(b"another server's secret");
        assert_eq!(other.check(&token, now), None);
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged_payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now + Duration::days(365))).unwrap());
        let header = head.split_once('.').unwrap().0;
        let forged = format!(
            "{header}.{forged_payload}.{}",
            token.rsplit_once('.').unwrap().1
        );
        assert_eq!(keys.check(&forged, now), None);
        let none_alg = format!(
            "{}.{forged_payload}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#)
        );
        assert_eq!(keys.check(&none_alg, now), None);
    }

    #[test]
    fn a_csrf_token_is_bound_to_its_session() {
        let keys = SessionKeys::derive(b"a server secret of some length");
        let (a, b) = (SessionId::generate(), SessionId::generate());
        assert!(keys.csrf_matches(a, &keys.csrf_token(a)));
        assert!(!keys.csrf_matches(b, &keys.csrf_token(a)));
    }
}
