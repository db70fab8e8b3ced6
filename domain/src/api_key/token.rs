//! The textual API key: `hrld_live_<key id>_<secret><checksum>`.
//!
//! The key id (16 alphanumerics) is public and is the lookup key; the secret is 43 characters
//! drawn uniformly from the 62 alphanumerics (256 bits of entropy, the same as 32 random bytes,
//! but safe to double-click and paste); the checksum is the CRC32 of everything before it in six
//! base62 characters, so a mistyped key is refused before any lookup. Only alphanumerics and
//! underscores appear, which keeps keys easy to spot for secret scanners.

use rand::distributions::{Alphanumeric, DistString};

use crate::KeyId;

const PREFIX: &str = "hrld_live_";
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Total length of a well-formed key.
pub const TOKEN_LEN: usize = PREFIX.len() + KeyId::LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the key is not in the hrld_live_ format")]
    Malformed,
    #[error("the key's checksum does not match")]
    BadChecksum,
}

/// A syntactically valid key whose checksum matched. Holding one says nothing about whether the
/// key exists or is active: that needs the key store.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    full: String,
    id: KeyId,
}

impl std::fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("base62 is ASCII")
}

impl ApiKeyToken {
    /// A new random key.
    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let id = KeyId::parse(&Alphanumeric.sample_string(&mut rng, KeyId::LEN))
            .expect("16 alphanumerics are a key id");
        let secret = Alphanumeric.sample_string(&mut rng, SECRET_LEN);
        let body = format!("{PREFIX}{id}_{secret}");
        let full = format!("{body}{}", checksum(&body));
        Self { full, id }
    }

    /// Checks the format and the checksum; no lookup, no allocation beyond the result.
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        // ASCII first: every later slice is then on a character boundary.
        if raw.len() != TOKEN_LEN || !raw.is_ascii() || !raw.starts_with(PREFIX) {
            return Err(TokenError::Malformed);
        }
        let rest = &raw[PREFIX.len()..];
        let (id, rest) = rest.split_at(KeyId::LEN);
        let id = KeyId::parse(id).ok_or(TokenError::Malformed)?;
        let Some(secret_and_sum) = rest.strip_prefix('_') else {
            return Err(TokenError::Malformed);
        };
        if !secret_and_sum.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Malformed);
        }
        let (body, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
        if checksum(body) != sum {
            return Err(TokenError::BadChecksum);
        }
        Ok(Self {
            full: raw.to_owned(),
            id,
        })
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The whole key: show it once, hash it, never log it.
    pub fn expose(&self) -> &str {
        &self.full
    }

    /// The prefix and the first characters of the id, safe to display in listings.
    pub fn start(&self) -> String {
        self.full[..PREFIX.len() + 4].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_the_same_id() {
        let token = ApiKeyToken::generate();
        assert_eq!(token.expose().len(), TOKEN_LEN);
        let parsed = ApiKeyToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.id(), token.id());
        assert!(token.start().starts_with("hrld_live_"));
    }

    #[test]
    fn a_single_typo_fails_the_checksum() {
        let token = ApiKeyToken::generate();
        let mut typo = token.expose().as_bytes().to_vec();
        let i = PREFIX.len() + KeyId::LEN + 5;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(ApiKeyToken::parse(&typo), Err(TokenError::BadChecksum));
    }

    #[test]
    fn non_ascii_input_of_the_right_length_is_malformed_not_a_panic() {
        let mut raw = "hrld_live_".to_string();
        raw.push_str(&"é".repeat((TOKEN_LEN - raw.len()) / 2));
        while raw.len() < TOKEN_LEN {
            raw.push('a');
        }
        assert_eq!(raw.len(), TOKEN_LEN);
        assert_eq!(ApiKeyToken::parse(&raw), Err(TokenError::Malformed));
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        assert_eq!(ApiKeyToken::parse("hello"), Err(TokenError::Malformed));
        let token = ApiKeyToken::generate();
        let other_prefix = token.expose().replacen("hrld_live_", "hrld_test_", 1);
        assert_eq!(
            ApiKeyToken::parse(&other_prefix),
            Err(TokenError::Malformed)
        );
    }
}
