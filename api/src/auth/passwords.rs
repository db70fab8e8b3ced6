//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), always off the
//! async runtime's threads. `verify_or_burn` spends the same work when the user is unknown, so
//! a login for an unknown email and one with a wrong password take about the same time.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;

/// Hashes a password to a PHC string (`$argon2id$v=19$...`) with a fresh salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| anyhow::anyhow!("could not hash a password: {e}"))
    })
    .await?
}

/// Whether `password` matches `stored`; with no stored hash, a dummy one is checked and the
/// answer is false.
pub async fn verify_or_burn(password: String, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let stored = stored.unwrap_or_else(|| dummy_hash().to_owned());
    let matches = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    known && matches
}

/// Computes the dummy hash now, so the first login for an unknown email is not the one that
/// pays for it (which would make that answer measurably slower).
pub async fn prepare() {
    let _ = tokio::task::spawn_blocking(dummy_hash).await;
}

/// A hash of a random password with the same parameters as real ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let password: [u8; 16] = rand::random();
        Argon2::default()
            .hash_password(&password)
            .map(|hash| hash.to_string())
            .expect("argon2 hashes any input")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify_or_burn("correct horse battery".into(), Some(stored.clone())).await);
        assert!(!verify_or_burn("wrong horse battery".into(), Some(stored)).await);
        assert!(!verify_or_burn("anything".into(), None).await);
    }
}
