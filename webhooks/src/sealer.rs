//! Sealing at rest under a key derived from the pepper: AES-256-GCM with a random 96-bit nonce,
//! bound to associated data the caller names (what the sealed bytes belong to), so sealed bytes
//! cannot be moved to another owner or altered unnoticed. Each use derives its own key from the
//! pepper under a label of its own (HMAC-SHA256 of the label), apart from every other key the
//! pepper gives. Webhook header values (`header_seal`) are sealed with it, and so is what the
//! API keeps for a while that may hold a secret. The pepper lives outside the database, so a
//! copy of the database alone does not open them.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const NONCE: usize = 12;

/// One use's key.
#[derive(Clone)]
pub struct Sealer(Aes256Gcm);

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// The key for the use named `label`, derived from `pepper`.
    pub fn from_pepper(pepper: &[u8], label: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(pepper).expect("HMAC takes any key length");
        mac.update(label);
        let key = mac.finalize().into_bytes();
        Self(Aes256Gcm::new_from_slice(&key).expect("a 32-byte key"))
    }

    /// `message` sealed for `owner`: a fresh random nonce followed by the ciphertext and tag.
    pub fn seal(&self, owner: &[u8], message: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: message,
            aad: owner,
        };
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("sealing into memory cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        bytes
    }

    /// What `sealed` holds, when it was sealed for `owner` under this key and is unaltered.
    pub fn open(&self, owner: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE {
            return None;
        }
        let (nonce, sealed) = sealed.split_at(NONCE);
        let payload = Payload {
            msg: sealed,
            aad: owner,
        };
        self.0.decrypt(Nonce::from_slice(nonce), payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_for_their_owner_under_their_key_and_unaltered() {
        let sealer = Sealer::from_pepper(b"pepper", b"use one");
        let sealed = sealer.seal(b"owner", b"s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_ne!(
            sealed,
            sealer.seal(b"owner", b"s3cret"),
            "a fresh nonce each time"
        );
        assert_eq!(
            sealer.open(b"owner", &sealed).as_deref(),
            Some(&b"s3cret"[..])
        );
        assert_eq!(sealer.open(b"other", &sealed), None);
        for other in [
            Sealer::from_pepper(b"other pepper", b"use one"),
            Sealer::from_pepper(b"pepper", b"use two"),
        ] {
            assert_eq!(other.open(b"owner", &sealed), None);
        }
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(sealer.open(b"owner", &altered), None);
        assert_eq!(sealer.open(b"owner", &sealed[..5]), None);
    }
}
