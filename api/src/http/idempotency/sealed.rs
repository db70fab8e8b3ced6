//! The answers kept for an `Idempotency-Key` are sealed at rest: an answer can hold a secret
//! that is shown once (a new API key's plaintext, a webhook endpoint's `whsec_` secret and its
//! header values), and it stays in `idempotency_keys` for a day. Each row's body is sealed with
//! the pepper-derived `Sealer` under a key of its own (derived from this use's key and the
//! row's scope and key, so no key seals more than a handful of bodies however many requests
//! come, and random nonces never come near their limit) and bound to the same scope and key,
//! so it opens only for the caller that sent the request, and never from a copy of the database
//! alone. Rows kept before sealing existed are marked unsealed and replayed as stored until
//! expiry forgets them.

use herald_webhooks::sealer::Sealer;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key each kept answer's own key is derived from.
#[derive(Clone)]
pub struct AnswerSeal(Vec<u8>);

impl std::fmt::Debug for AnswerSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerSeal(***)")
    }
}

impl AnswerSeal {
    pub fn from_pepper(pepper: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(pepper).expect("HMAC takes any key length");
        mac.update(b"herald idempotent answers v1");
        Self(mac.finalize().into_bytes().to_vec())
    }

    /// `body` sealed for the key `key` of the credentials hashed as `scope`.
    pub fn seal(&self, scope: &str, key: &str, body: &[u8]) -> Vec<u8> {
        let owner = owner(scope, key);
        self.row_key(&owner).seal(&owner, body)
    }

    /// The body kept for `scope` and `key`; `None` when it does not open (sealed under another
    /// pepper, for another row, or altered).
    pub fn open(&self, scope: &str, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        let owner = owner(scope, key);
        self.row_key(&owner).open(&owner, sealed)
    }

    fn row_key(&self, owner: &[u8]) -> Sealer {
        Sealer::from_pepper(&self.0, owner)
    }
}

/// What a kept answer is bound to. The scope is hex and keys are visible ASCII, so the NUL
/// between them cannot be moved.
fn owner(scope: &str, key: &str) -> Vec<u8> {
    [scope.as_bytes(), &[0], key.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_opens_only_for_its_own_scope_and_key() {
        let seal = AnswerSeal::from_pepper(b"pepper");
        let sealed = seal.seal("ab12", "k-1", br#"{"key":"hrld_live_x"}"#);
        assert_eq!(
            seal.open("ab12", "k-1", &sealed).as_deref(),
            Some(&br#"{"key":"hrld_live_x"}"#[..])
        );
        assert_eq!(seal.open("ab12", "k-2", &sealed), None);
        assert_eq!(seal.open("ab13", "k-1", &sealed), None);
        assert_eq!(seal.open("ab1", "2k-1", &sealed), None);
        let other = AnswerSeal::from_pepper(b"other");
        assert_eq!(other.open("ab12", "k-1", &sealed), None);
    }

    /// A body sealed once and kept, so the derivation and layout cannot drift unnoticed
    /// (opened independently with Python's `cryptography`: the row's key is HMAC-SHA256 of
    /// scope, NUL and key under HMAC-SHA256 of the label under the pepper).
    #[test]
    fn a_body_sealed_by_an_earlier_version_still_opens() {
        use base64::Engine;
        let stored = base64::engine::general_purpose::STANDARD
            .decode("rc+CAqBnWl0pri5fS5MHODn0V9rnn3b+8pTypq/X")
            .unwrap();
        let seal = AnswerSeal::from_pepper(b"pepper");
        assert_eq!(
            seal.open("ab12", "k-1", &stored).as_deref(),
            Some(&b"{}"[..])
        );
    }
}
