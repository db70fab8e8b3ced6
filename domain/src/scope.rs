//! Scopes: what an API key may do. `admin` implies every other scope.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "jobs:work")]
    JobsWork,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    KeysWrite,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::JobsWork,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::UsageRead,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::JobsWork => "jobs:work",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::UsageRead => "usage:read",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}`"))
    }
}

/// A non-empty set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(BTreeSet<Scope>);

impl Scopes {
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Result<Self, String> {
        let set = items
            .into_iter()
            .map(|s| s.as_ref().trim().parse())
            .collect::<Result<BTreeSet<Scope>, _>>()?;
        if set.is_empty() {
            return Err("at least one scope is required".into());
        }
        Ok(Self(set))
    }

    /// True when these scopes allow `wanted` (`admin` allows everything).
    pub fn allows(&self, wanted: Scope) -> bool {
        self.0.contains(&Scope::Admin) || self.0.contains(&wanted)
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }

    /// True when every scope here is also allowed by `holder` (a key can never hand out more
    /// than it holds; `admin` holds everything).
    pub fn within(&self, holder: &Scopes) -> bool {
        self.iter().all(|scope| holder.allows(scope))
    }

    /// The scopes allowed by `holder` that are missing here, for error messages.
    pub fn beyond(&self, holder: &Scopes) -> Vec<Scope> {
        self.iter().filter(|scope| !holder.allows(*scope)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_every_scope_and_others_only_themselves() {
        let admin = Scopes::parse(["admin"]).unwrap();
        let reader = Scopes::parse(["jobs:read"]).unwrap();
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        assert!(reader.allows(Scope::JobsRead));
        assert!(!reader.allows(Scope::JobsWrite));
    }

    #[test]
    fn a_set_is_within_its_holder_only_when_every_scope_is_allowed() {
        let holder = Scopes::parse(["jobs:read", "jobs:write"]).unwrap();
        assert!(Scopes::parse(["jobs:read"]).unwrap().within(&holder));
        let wider = Scopes::parse(["jobs:read", "keys:write"]).unwrap();
        assert!(!wider.within(&holder));
        assert_eq!(wider.beyond(&holder), [Scope::KeysWrite]);
        assert!(wider.within(&Scopes::parse(["admin"]).unwrap()));
    }

    #[test]
    fn unknown_and_empty_scope_lists_are_refused() {
        assert!(Scopes::parse(["jobs:delete"]).is_err());
        assert!(Scopes::parse(Vec::<String>::new()).is_err());
    }
}
