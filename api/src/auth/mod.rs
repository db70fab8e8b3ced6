//! Who is calling and what they may do.
//!
//! `scheme` declares the two ways to present a key (documented in the OpenAPI document),
//! `verifier` checks a presented key against the cached key store, and `Caller` is the result
//! that handlers consult for scopes and project visibility.

mod scheme;
mod verifier;

pub use scheme::Credentials;
pub use verifier::{hash_key, KeyVerifier, Refusal};

use herald_domain::{KeyId, ProjectId, Scope, Scopes};

use crate::http::problem::ApiError;

/// An authenticated API key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: KeyId,
    /// The key's project; `None` for admin keys, which see every project.
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
}

impl Caller {
    /// 403 naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this key lacks the `{scope}` scope"
            )))
        }
    }

    /// Whether a resource of `project` exists for this caller (others answer 404).
    pub fn can_see(&self, project: ProjectId) -> bool {
        self.project_id.is_none_or(|own| own == project)
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.allows(Scope::Admin)
    }
}
