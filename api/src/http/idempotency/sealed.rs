//! The answers kept for an `Idempotency-Key` are sealed at rest: an answer can hold a secret
//! that is shown once (a new API key's plaintext, a webhook endpoint's `whsec_` secret and its
//! header values), and it stays in `idempotency_keys` for a day. The body is sealed with the
//! pepper-derived `Sealer` (its own label) and bound to the row's scope and key, so it opens
//! only for the caller that sent the request, and never from a copy of the database alone.
//! Rows kept before sealing existed are marked unsealed and replayed as stored until expiry
//! forgets them.

use herald_webhooks::sealer::Sealer;

/// The key kept answers are sealed under.
#[derive(Clone, Debug)]
pub struct AnswerSeal(Sealer);

impl AnswerSeal {
    pub fn from_pepper(pepper: &[u8]) -> Self {
        Self(Sealer::from_pepper(pepper, b"herald idempotent answers v1"))
    }

    /// `body` sealed for the key `key` of the credentials hashed as `scope`.
    pub fn seal(&self, scope: &str, key: &str, body: &[u8]) -> Vec<u8> {
        self.0.seal(&owner(scope, key), body)
    }

    /// The body kept for `scope` and `key`; `None` when it does not open (sealed under another
    /// pepper, for another row, or altered).
    pub fn open(&self, scope: &str, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.0.open(&owner(scope, key), sealed)
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
}
