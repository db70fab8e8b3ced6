//! Roles: what a user may do. A user is an `admin` (everything, everywhere) or a `member`
//! whose power comes from a role in each project it belongs to. A project role is expressed
//! as the key scopes it grants, so keys and users are checked by the same rules; the table in
//! `docs/AUTHENTICATION.md` is generated from the same mapping and a test walks it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Scope, Scopes};

/// A user's standing in the whole installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountRole {
    Admin,
    Member,
}

impl AccountRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountRole::Admin => "admin",
            AccountRole::Member => "member",
        }
    }
}

/// A member's role in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    /// Everything in the project, including its keys and members.
    Owner,
    /// Jobs and webhooks; reads everything else.
    Editor,
    /// Reads only.
    Viewer,
}

impl ProjectRole {
    pub const ALL: [ProjectRole; 3] =
        [ProjectRole::Owner, ProjectRole::Editor, ProjectRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Owner => "owner",
            ProjectRole::Editor => "editor",
            ProjectRole::Viewer => "viewer",
        }
    }

    /// The scopes this role holds in its project. Never `admin`.
    pub fn scopes(self) -> Scopes {
        use Scope::*;
        let list: &[Scope] = match self {
            ProjectRole::Owner => &[
                JobsRead,
                JobsWrite,
                JobsWork,
                WebhooksRead,
                WebhooksWrite,
                KeysRead,
                KeysWrite,
                UsageRead,
                AuditRead,
            ],
            ProjectRole::Editor => &[
                JobsRead,
                JobsWrite,
                WebhooksRead,
                WebhooksWrite,
                KeysRead,
                UsageRead,
            ],
            ProjectRole::Viewer => &[JobsRead, WebhooksRead, KeysRead, UsageRead],
        };
        Scopes::parse(list.iter().map(|s| s.as_str())).expect("every role holds a scope")
    }

    /// Whether this role may manage the project's members.
    pub fn manages_members(self) -> bool {
        self == ProjectRole::Owner
    }
}

impl fmt::Display for ProjectRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProjectRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProjectRole::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (owner, editor or viewer)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_holds_what_the_role_below_it_holds() {
        let (owner, editor, viewer) = (
            ProjectRole::Owner.scopes(),
            ProjectRole::Editor.scopes(),
            ProjectRole::Viewer.scopes(),
        );
        assert!(viewer.within(&editor) && editor.within(&owner));
        assert!(!viewer.allows(Scope::JobsWrite));
        assert!(!editor.allows(Scope::KeysWrite));
        assert!(!owner.allows(Scope::Admin));
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        assert_eq!("editor".parse(), Ok(ProjectRole::Editor));
        assert!("admin".parse::<ProjectRole>().is_err());
    }
}
