//! `Caller`: who is behind a request and what they may do, whether an API key or a logged-in
//! user. A key holds scopes, within its one project (or every project, for admin keys); an
//! admin user holds everything; a member holds, in each of its projects, the scopes of its
//! role there. Handlers ask the same questions of both: `require` (is the scope held at all,
//! else 403), `can_see` (does the project exist for this caller, else 404) and `require_in`
//! (is the scope held in that project, else 403).

use std::collections::BTreeMap;

use herald_domain::api_key::RateLimit;
use herald_domain::role::ProjectRole;
use herald_domain::user::UserState;
use herald_domain::{FieldError, KeyId, ProjectId, Scope, Scopes, SessionId, UserId};
use herald_store::search::Visible;
use herald_store::Actor;

use crate::http::problem::ApiError;

/// The authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Key(KeyId),
    User { id: UserId, session: SessionId },
}

#[derive(Debug, Clone)]
enum Grants {
    Key {
        project: Option<ProjectId>,
        scopes: Scopes,
    },
    AdminUser,
    Member(BTreeMap<ProjectId, ProjectRole>),
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Whose budgets a key spends: the first key of the rotations that led to it.
    budget_key: Option<KeyId>,
    /// The key's own rate limits (unset fields, and users, use the configured defaults).
    pub limits: RateLimit,
    grants: Grants,
    /// The scope the endpoint demanded (set by `AppState::authorize`), checked again per project.
    demanded: Option<Scope>,
}

impl Caller {
    /// `budget_key`: whose rate-limit budgets the key spends (`ApiKeyState::budget_key`).
    pub fn for_key(
        id: KeyId,
        budget_key: KeyId,
        project: Option<ProjectId>,
        scopes: Scopes,
        limits: RateLimit,
    ) -> Self {
        Self {
            principal: Principal::Key(id),
            budget_key: Some(budget_key),
            limits,
            grants: Grants::Key { project, scopes },
            demanded: None,
        }
    }

    pub fn for_user(id: UserId, session: SessionId, user: &UserState) -> Self {
        let grants = if user.is_admin() {
            Grants::AdminUser
        } else {
            Grants::Member(user.projects.clone())
        };
        Self {
            principal: Principal::User { id, session },
            budget_key: None,
            limits: RateLimit::default(),
            grants,
            demanded: None,
        }
    }

    /// 403 unless the scope is held (for a member: in at least one project). Remembers the
    /// scope so `require_in` can check it against a resource's project.
    pub fn require(&mut self, scope: Scope) -> Result<(), ApiError> {
        self.demanded = Some(scope);
        let held = match &self.grants {
            // `admin` is honoured only on a key bound to no project (none can be made
            // otherwise; this guards keys made before that was refused).
            Grants::Key { scopes, project } if scope == Scope::Admin => {
                project.is_none() && scopes.allows(scope)
            }
            Grants::Key { scopes, .. } => scopes.allows(scope),
            Grants::AdminUser => true,
            Grants::Member(roles) => roles.values().any(|role| role.scopes().allows(scope)),
        };
        if held {
            return Ok(());
        }
        Err(ApiError::Forbidden(match self.grants {
            Grants::Key { .. } => format!("this key lacks the `{scope}` scope"),
            _ => format!("no role of yours allows `{scope}`"),
        }))
    }

    /// Names this caller (and its own project, if it has one) as the actor of the request
    /// being handled, for the request log.
    pub fn note_as_actor(&self) {
        let (kind, id) = match &self.principal {
            Principal::Key(id) => ("api_key", id.to_string()),
            Principal::User { id, .. } => ("user", id.to_string()),
        };
        let project = self.project_id().map(|p| p.as_uuid());
        crate::http::context::set_actor(kind, id, project);
    }

    /// Whether a resource of `project` exists for this caller (others answer 404).
    pub fn can_see(&self, project: ProjectId) -> bool {
        match &self.grants {
            Grants::Key { project: own, .. } => own.is_none_or(|own| own == project),
            Grants::AdminUser => true,
            Grants::Member(roles) => roles.contains_key(&project),
        }
    }

    /// 403 unless the demanded scope is held in `project` (which the caller can see). When it
    /// is, the request acts in `project`: the request log records it there (a user, or an
    /// admin key, belongs to no project of its own), unless it acts in several.
    pub fn require_in(&self, project: ProjectId) -> Result<(), ApiError> {
        let allowed = self.allowed_in(project);
        if allowed.is_ok() {
            crate::http::context::note_project(project.as_uuid());
        }
        allowed
    }

    fn allowed_in(&self, project: ProjectId) -> Result<(), ApiError> {
        let (Grants::Member(roles), Some(scope)) = (&self.grants, self.demanded) else {
            return Ok(());
        };
        match roles.get(&project) {
            Some(role) if role.scopes().allows(scope) => Ok(()),
            Some(role) => Err(ApiError::Forbidden(format!(
                "your `{role}` role in this project does not allow `{scope}`"
            ))),
            None => Err(ApiError::Forbidden(format!(
                "you are not a member of this project (`{scope}` needed)"
            ))),
        }
    }

    /// The scopes held in `project` (`None`: across the installation), or none at all.
    pub fn scopes_in(&self, project: Option<ProjectId>) -> Option<Scopes> {
        match (&self.grants, project) {
            (Grants::Key { scopes, .. }, _) => Some(scopes.clone()),
            (Grants::AdminUser, _) => Scopes::parse(["admin"]).ok(),
            (Grants::Member(roles), Some(project)) => roles.get(&project).map(|r| r.scopes()),
            (Grants::Member(_), None) => None,
        }
    }

    /// The role held in `project`, for members.
    pub fn role_in(&self, project: ProjectId) -> Option<ProjectRole> {
        match &self.grants {
            Grants::Member(roles) => roles.get(&project).copied(),
            _ => None,
        }
    }

    /// The one project a key is bound to; `None` for admin keys and for users.
    pub fn project_id(&self) -> Option<ProjectId> {
        match &self.grants {
            Grants::Key { project, .. } => *project,
            _ => None,
        }
    }

    /// The project a new resource goes in: a bound key's own (naming another is refused), or
    /// the one a caller bound to none names (required). Whether that caller may act there is
    /// the caller's next check.
    pub fn target_project(&self, asked: Option<uuid::Uuid>) -> Result<ProjectId, FieldError> {
        match (self.project_id(), asked) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(asked)) if own.as_uuid() == asked => Ok(own),
            (Some(_), Some(_)) => Err(FieldError::new(
                "project_id",
                "must be the key's own project",
            )),
            (None, Some(asked)) => Ok(ProjectId::from_uuid(asked)),
            (None, None) => Err(FieldError::new(
                "project_id",
                "required unless the caller is a key bound to one project",
            )),
        }
    }

    /// The projects whose resources lists may show; `None` means every project. For a member,
    /// only the projects whose role holds the scope the caller was authorized for (an owner of
    /// one project and a viewer of another reads the request log of the first only).
    pub fn visible_projects(&self) -> Option<Vec<uuid::Uuid>> {
        match &self.grants {
            Grants::Key { project, .. } => project.map(|p| vec![p.as_uuid()]),
            Grants::AdminUser => None,
            Grants::Member(roles) => Some(
                roles
                    .iter()
                    .filter(|(_, role)| self.demanded.is_none_or(|s| role.scopes().allows(s)))
                    .map(|(project, _)| project.as_uuid())
                    .collect(),
            ),
        }
    }

    /// Which events of the log this caller may read: everything for admins and for keys with
    /// `audit:read` bound to no project; for another key bound to no project, the aggregate
    /// types its scopes read, in every project; otherwise `(project, aggregate type)` pairs
    /// from the scopes held in each project. 403 when that is nothing.
    pub fn event_visibility(&self) -> Result<Visible, ApiError> {
        let pairs = |project: ProjectId, scopes: &Scopes| -> Vec<(uuid::Uuid, String)> {
            readable_aggregates(scopes)
                .into_iter()
                .map(|kind| (project.as_uuid(), kind.to_owned()))
                .collect()
        };
        let visible = match &self.grants {
            Grants::AdminUser => return Ok(Visible::All),
            Grants::Key {
                project: None,
                scopes,
            } if scopes.allows(Scope::AuditRead) => return Ok(Visible::All),
            Grants::Key {
                project: None,
                scopes,
            } => Visible::Kinds(
                readable_aggregates(scopes)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            ),
            Grants::Key {
                project: Some(project),
                scopes,
            } => Visible::Pairs(pairs(*project, scopes)),
            Grants::Member(roles) => Visible::Pairs(
                roles
                    .iter()
                    .flat_map(|(project, role)| pairs(*project, &role.scopes()))
                    .collect(),
            ),
        };
        if matches!(&visible, Visible::Kinds(v) if v.is_empty())
            || matches!(&visible, Visible::Pairs(v) if v.is_empty())
        {
            return Err(ApiError::Forbidden(
                "reading events needs `audit:read` or the read scope of a resource".into(),
            ));
        }
        Ok(visible)
    }

    pub fn is_admin(&self) -> bool {
        match &self.grants {
            Grants::Key { scopes, project } => project.is_none() && scopes.allows(Scope::Admin),
            Grants::AdminUser => true,
            Grants::Member(_) => false,
        }
    }

    /// Members are checked per project; keys and admins are not.
    pub fn is_member(&self) -> bool {
        matches!(self.grants, Grants::Member(_))
    }

    /// The key behind a worker call: leases belong to keys, not to people.
    pub fn worker(&self) -> Result<KeyId, ApiError> {
        match &self.principal {
            Principal::Key(id) => Ok(id.clone()),
            Principal::User { .. } => Err(ApiError::Forbidden(
                "worker endpoints take an API key with the `jobs:work` scope".into(),
            )),
        }
    }

    pub fn key_id(&self) -> Option<&KeyId> {
        match &self.principal {
            Principal::Key(id) => Some(id),
            Principal::User { .. } => None,
        }
    }

    pub fn user(&self) -> Option<(UserId, SessionId)> {
        match &self.principal {
            Principal::User { id, session } => Some((*id, *session)),
            Principal::Key(_) => None,
        }
    }

    /// Whose budget a request spends.
    pub fn rate_subject(&self) -> String {
        match &self.principal {
            Principal::Key(id) => format!("key:{}", self.budget_key.as_ref().unwrap_or(id)),
            Principal::User { id, .. } => format!("user:{id}"),
        }
    }

    pub fn actor(&self) -> Actor {
        match &self.principal {
            Principal::Key(id) => Actor::ApiKey(id.to_string()),
            Principal::User { id, .. } => Actor::User(id.to_string()),
        }
    }
}

/// The aggregates whose events a set of scopes reads within a project: `audit:read` reads them
/// all; otherwise each resource's read scope reads its own, and any of them the project's.
fn readable_aggregates(scopes: &Scopes) -> Vec<&'static str> {
    if scopes.allows(Scope::AuditRead) {
        // `user`: the role events of the project's members (migration 0024).
        return vec!["job", "api_key", "webhook_endpoint", "project", "user"];
    }
    let mut kinds: Vec<&'static str> = [
        (Scope::JobsRead, "job"),
        (Scope::KeysRead, "api_key"),
        (Scope::WebhooksRead, "webhook_endpoint"),
    ]
    .into_iter()
    .filter(|(scope, _)| scopes.allows(*scope))
    .map(|(_, kind)| kind)
    .collect();
    if !kinds.is_empty() {
        kinds.push("project");
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(project: Option<ProjectId>) -> Caller {
        key_with(project, "jobs:write")
    }

    fn key_with(project: Option<ProjectId>, scope: &str) -> Caller {
        let id = KeyId::parse("Zp3kQ8rT2mN5vB7x").unwrap();
        let scopes = Scopes::parse([scope]).unwrap();
        Caller::for_key(id.clone(), id, project, scopes, RateLimit::default())
    }

    #[test]
    fn the_admin_scope_of_a_key_bound_to_a_project_grants_no_admin_rights() {
        let own = ProjectId::generate();
        let mut bound = key_with(Some(own), "admin");
        assert!(!bound.is_admin());
        assert!(bound.require(Scope::Admin).is_err());
        // Within its own project it still reads and writes.
        assert!(bound.require(Scope::JobsWrite).is_ok());
        let mut unbound = key_with(None, "admin");
        assert!(unbound.is_admin());
        assert!(unbound.require(Scope::Admin).is_ok());
    }

    #[test]
    fn a_bound_key_targets_its_own_project_and_an_unbound_caller_names_one() {
        let own = ProjectId::generate();
        let other = ProjectId::generate();
        let bound = key(Some(own));
        assert_eq!(bound.target_project(None), Ok(own));
        assert_eq!(bound.target_project(Some(own.as_uuid())), Ok(own));
        let refused = bound.target_project(Some(other.as_uuid())).unwrap_err();
        assert!(refused.message.contains("own project"), "{refused:?}");
        let unbound = key(None);
        assert_eq!(unbound.target_project(Some(other.as_uuid())), Ok(other));
        let missing = unbound.target_project(None).unwrap_err();
        assert!(missing.message.contains("required"), "{missing:?}");
    }
}
