//! The request log's chain key: records of the keyed format (3) are hashed with HMAC-SHA256
//! under it, so someone who can write to the database but does not hold the key cannot edit a
//! record and compute the hashes of the records after it again. It is derived from the
//! server's pepper (configured, or generated into the data directory; never stored in the
//! database), so every replica that shares the pepper shares the key, and the pepper itself
//! cannot be worked back from it: the key can be handed to an auditor's verifier without
//! handing over what API keys are hashed with.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the pepper is keyed with to derive the chain key (docs/API.md).
const PURPOSE: &[u8] = b"herald request log chain";

/// HMAC-SHA256 under the chain key, its key schedule computed once.
#[derive(Clone)]
pub struct ChainKey(Hmac<Sha256>);

impl ChainKey {
    /// The key of the servers that use `pepper`: HMAC-SHA256(pepper, "herald request log chain").
    pub fn from_pepper(pepper: &[u8]) -> Self {
        let mut derive = Hmac::<Sha256>::new_from_slice(pepper).expect("HMAC takes any key");
        derive.update(PURPOSE);
        Self::from_bytes(&derive.finalize().into_bytes())
    }

    /// The key itself (32 bytes), as `from_pepper` derives it or an auditor was given it.
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(Hmac::new_from_slice(key).expect("HMAC takes any key"))
    }

    /// A fresh MAC under the key, for one record.
    pub(super) fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }

    /// The seal of the anchor retention leaves (migration 0025): HMAC-SHA256 under the key over
    /// `anchor`, its position, its hash and whether its record was keyed, as lowercase hex.
    pub fn seal_anchor(&self, seq: i64, hash: &str, keyed: bool) -> String {
        let mut mac = self.mac();
        mac.update(format!("anchor\n{seq}\n{hash}\n{keyed}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey([redacted])")
    }
}
