//! Sealed header values. An endpoint's custom headers are often its receiver's own credentials,
//! and events are kept forever, so their values never enter an event as they were given: the
//! API seals each value (AES-256-GCM under a key derived from the pepper, which lives outside
//! the database) before the command that stores it, and the value is opened only where it is
//! used: in a delivery's request, and in `GET /webhooks/{id}` for the endpoint's managers.
//! A sealed value is bound to its endpoint and header name (the associated data), so it cannot
//! be moved to another endpoint or header. Values stored before sealing existed are plain text
//! (no `sealed:v1:` prefix) until the server seals them at start (`api/src/webhook_headers.rs`);
//! `open` passes them through meanwhile.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::sealer::Sealer;

/// How a sealed value starts.
pub const SEALED: &str = "sealed:v1:";

/// The key header values are sealed under.
#[derive(Clone, Debug)]
pub struct HeaderSeal(Sealer);

impl HeaderSeal {
    /// The key derived from the pepper for header values (`Sealer::from_pepper`).
    pub fn from_pepper(pepper: &[u8]) -> Self {
        Self(Sealer::from_pepper(
            pepper,
            b"herald webhook header values v1",
        ))
    }

    /// `value` sealed for header `name` of `endpoint`: `sealed:v1:` and base64 of a random
    /// 96-bit nonce followed by the ciphertext and its tag.
    pub fn seal(&self, endpoint: Uuid, name: &str, value: &str) -> String {
        let sealed = self.0.seal(&associated(endpoint, name), value.as_bytes());
        format!("{SEALED}{}", STANDARD_NO_PAD.encode(sealed))
    }

    /// The value of header `name` of `endpoint` as stored: opened when sealed, as it is when
    /// stored before sealing existed; `None` when it does not open (another key, another
    /// endpoint or header, or altered).
    pub fn open(&self, endpoint: Uuid, name: &str, stored: &str) -> Option<String> {
        let Some(encoded) = stored.strip_prefix(SEALED) else {
            return Some(stored.to_owned());
        };
        let sealed = STANDARD_NO_PAD.decode(encoded).ok()?;
        let opened = self.0.open(&associated(endpoint, name), &sealed)?;
        String::from_utf8(opened).ok()
    }

    /// Every value of `headers` sealed (as given by a caller: none is sealed yet).
    pub fn seal_all(
        &self,
        endpoint: Uuid,
        headers: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        headers
            .iter()
            .map(|(name, value)| (name.clone(), self.seal(endpoint, name, value)))
            .collect()
    }

    /// Every value of `headers` (as stored) opened; one that does not open is left out, and
    /// logged, so it is never sent or shown as its sealed text.
    pub fn open_all(
        &self,
        endpoint: Uuid,
        headers: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        headers
            .iter()
            .filter_map(|(name, stored)| match self.open(endpoint, name, stored) {
                Some(value) => Some((name.clone(), value)),
                None => {
                    tracing::error!(%endpoint, header = %name, "a header value does not open");
                    None
                }
            })
            .collect()
    }
}

/// What a sealed value is bound to: its endpoint and its header's name.
fn associated(endpoint: Uuid, name: &str) -> Vec<u8> {
    let mut aad = endpoint.as_bytes().to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_endpoint_and_header_under_its_key() {
        let seal = HeaderSeal::from_pepper(b"pepper");
        let (endpoint, other) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = seal.seal(endpoint, "Authorization", "Bearer s3cret");
        assert!(sealed.starts_with(SEALED));
        assert!(!sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            seal.seal(endpoint, "Authorization", "Bearer s3cret")
        );
        let open = |s: &HeaderSeal, e, n: &str| s.open(e, n, &sealed);
        assert_eq!(
            open(&seal, endpoint, "Authorization").as_deref(),
            Some("Bearer s3cret")
        );
        assert_eq!(open(&seal, other, "Authorization"), None);
        assert_eq!(open(&seal, endpoint, "X-Other"), None);
        assert_eq!(
            open(
                &HeaderSeal::from_pepper(b"other"),
                endpoint,
                "Authorization"
            ),
            None
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(seal.open(endpoint, "Authorization", &altered), None);
    }

    #[test]
    fn a_value_stored_before_sealing_reads_as_it_is() {
        let seal = HeaderSeal::from_pepper(b"pepper");
        let endpoint = Uuid::now_v7();
        assert_eq!(
            seal.open(endpoint, "X-Team", "render").as_deref(),
            Some("render")
        );
        let stored = BTreeMap::from([
            ("X-Team".to_owned(), "render".to_owned()),
            ("X-Key".to_owned(), seal.seal(endpoint, "X-Key", "k")),
            ("X-Bad".to_owned(), format!("{SEALED}AAAA")),
        ]);
        let opened = seal.open_all(endpoint, &stored);
        assert_eq!(
            opened,
            BTreeMap::from([
                ("X-Key".to_owned(), "k".to_owned()),
                ("X-Team".to_owned(), "render".to_owned()),
            ])
        );
    }
    /// A value sealed once and kept: values already stored must open under every later
    /// version, so the key's derivation and the layout cannot drift unnoticed. (Checked
    /// independently: Python's `cryptography` AES-GCM opens it with HMAC-SHA256 of the label
    /// under the pepper as key, the first 12 bytes as nonce, the endpoint's 16 bytes followed
    /// by the header name as associated data.)
    #[test]
    fn a_value_sealed_by_an_earlier_version_still_opens() {
        let seal = HeaderSeal::from_pepper(b"pepper");
        let stored = "sealed:v1:pWq0Pb1vc/zhXx6ouy9q9BZXaVLblS3gjo61B7TTEElpJZ0jZhlF1JM";
        assert_eq!(
            seal.open(Uuid::from_u128(7), "Authorization", stored)
                .as_deref(),
            Some("Bearer s3cret")
        );
    }
}
