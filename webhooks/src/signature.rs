//! Standard Webhooks signing: secrets are `whsec_` + base64 of random bytes, and a message is
//! signed as `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")). During a secret
//! rotation every active secret signs, and the signatures are sent space-separated.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A signing secret, decoded.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// A new secret of 32 random bytes, in its textual form (shown to the user once).
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PREFIX)?;
        STANDARD
            .decode(encoded)
            .ok()
            .filter(|b| !b.is_empty())
            .map(Self)
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per active secret, space-separated.
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specification_vector_signs_as_published() {
        let secret = SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn generated_secrets_parse_and_every_active_secret_signs() {
        let (a, b) = (SigningSecret::generate(), SigningSecret::generate());
        assert!(a.starts_with("whsec_") && a != b);
        let secrets = [
            SigningSecret::parse(&a).unwrap(),
            SigningSecret::parse(&b).unwrap(),
        ];
        let header = signature_header(&secrets, "msg_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(SigningSecret::parse("whsec_").is_none());
        assert!(SigningSecret::parse("nope").is_none());
    }
}
