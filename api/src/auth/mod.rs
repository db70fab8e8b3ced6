//! Who is calling and what they may do.
//!
//! `scheme` declares the ways to present credentials (documented in the OpenAPI document),
//! `verifier` checks API keys against the cached key store, `users` checks session tokens
//! against the cached users, `changes` keeps both caches current across replicas, `session`
//! signs access and CSRF tokens, `passwords` hashes with argon2id, `login_limit` bounds login
//! attempts, `admission` authenticates the requests no handler sees, and `Caller` is the result
//! that handlers consult for scopes and projects.

mod admission;
mod caller;
pub mod changes;
mod key_usage;
pub mod login_limit;
pub mod passwords;
mod scheme;
pub mod session;
mod users;
mod verifier;

pub use admission::CredentialHeaders;
pub use caller::{Caller, Principal};
pub use scheme::{Credentials, MaybeCredentials, Presented};
pub use users::UserDirectory;
pub use verifier::{hash_key, KeyVerifier, Refusal};
