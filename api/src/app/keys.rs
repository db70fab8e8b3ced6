//! Creating, changing, rotating and revoking API keys on behalf of a caller. The plaintext key
//! exists only in the return value of `create`/`rotate`: events store its peppered HMAC and its
//! displayable start.

use chrono::{DateTime, Duration, Utc};
use herald_domain::api_key::{
    ApiKey, ApiKeyCommand, ApiKeyError, ApiKeyState, ApiKeyToken, IpAllowlist, KeyName, KeyUpdate,
    NewApiKey, RateLimit,
};
use herald_domain::project::Project;
use herald_domain::{KeyId, ProjectId, Scope, Scopes};
use herald_store::{AggregateStore, CommandError, EventMetadata};

use crate::auth::{hash_key, Caller};
use crate::http::problem::ApiError;

/// What a new key is made of, before it has a secret.
pub struct NewKey {
    pub name: KeyName,
    pub description: Option<String>,
    pub project_id: Option<ProjectId>,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    pub ip_allowlist: IpAllowlist,
    pub rate_limit: RateLimit,
}

impl NewKey {
    /// A key with only a name, scopes and project (the CLI's and the tests' common case).
    pub fn simple(name: KeyName, project_id: Option<ProjectId>, scopes: Scopes) -> Self {
        Self {
            name,
            description: None,
            project_id,
            scopes,
            expires_at: None,
            ip_allowlist: IpAllowlist::default(),
            rate_limit: RateLimit::default(),
        }
    }
}

impl From<CommandError<ApiKeyError>> for ApiError {
    fn from(error: CommandError<ApiKeyError>) -> Self {
        match error {
            CommandError::Rejected(ApiKeyError::NotFound) => not_found(),
            CommandError::Rejected(ApiKeyError::ScopeEscalation) => ApiError::Forbidden(
                "a key's scopes can only be narrowed, except by an admin".into(),
            ),
            CommandError::Rejected(ApiKeyError::LimitsAdminOnly) => {
                ApiError::Forbidden("only an admin sets a key's rate limits".into())
            }
            CommandError::Rejected(ApiKeyError::AdminScopeOnProjectKey) => ApiError::field(
                "scopes",
                "`admin` is for keys bound to no project: leave `project_id` out",
            ),
            CommandError::Rejected(rejected) => ApiError::Conflict {
                code: rejected.code(),
                detail: rejected.to_string(),
            },
            CommandError::Conflict => ApiError::Conflict {
                code: "CONCURRENT_MODIFICATION",
                detail: "the key was changed concurrently; retry the request".into(),
            },
            CommandError::Store(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

pub fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "API_KEY_NOT_FOUND",
        detail: "API key not found".into(),
    }
}

/// The project a new key goes to: the caller's own, or (for admins) the one named.
pub async fn target_project(
    projects: &AggregateStore<Project>,
    caller: &Caller,
    asked: Option<uuid::Uuid>,
    scopes: &Scopes,
) -> Result<Option<ProjectId>, ApiError> {
    match (caller.project_id(), asked) {
        (Some(own), None) => Ok(Some(own)),
        (Some(own), Some(asked)) if own.as_uuid() == asked => Ok(Some(own)),
        (Some(_), Some(_)) => Err(ApiError::field(
            "project_id",
            "must be the key's own project",
        )),
        (None, None) if scopes.allows(Scope::Admin) => Ok(None),
        (None, None) => Err(ApiError::field(
            "project_id",
            "required unless the new key has the `admin` scope",
        )),
        (None, Some(asked)) => {
            let (project, _) = projects
                .load(&asked.to_string())
                .await
                .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
            let asked = ProjectId::from_uuid(asked);
            if project.state().is_none() || !caller.can_see(asked) {
                return Err(ApiError::field("project_id", "no such project"));
            }
            caller.require_in(asked)?;
            Ok(Some(asked))
        }
    }
}

/// What a key passes on beyond its scopes: a non-admin key with an IP allowlist or an expiry
/// cannot give a key (one it creates, or one whose allowlist it changes) more reach than its
/// own: addresses outside its allowlist (403), or a life past its own expiry (403). Admins,
/// users and keys without either are not held to anything here.
pub async fn within_caller_reach(
    store: &AggregateStore<ApiKey>,
    caller: &Caller,
    allowlist: Option<&IpAllowlist>,
    expires_at: Option<Option<DateTime<Utc>>>,
) -> Result<(), ApiError> {
    let Some(own_id) = caller.key_id().filter(|_| !caller.is_admin()) else {
        return Ok(());
    };
    let (own, _) = store.load(own_id.as_str()).await?;
    let own = own.state().ok_or_else(not_found)?;
    if allowlist.is_some_and(|asked| !asked.within(&own.ip_allowlist)) {
        return Err(ApiError::Forbidden(
            "a key cannot let a key be used from addresses its own allowlist does not allow".into(),
        ));
    }
    let outlives = |asked: Option<DateTime<Utc>>| match (asked, own.expires_at) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(asked), Some(own)) => asked > own,
    };
    if expires_at.is_some_and(outlives) {
        return Err(ApiError::Forbidden(
            "a key cannot create a key that outlives its own expiry".into(),
        ));
    }
    Ok(())
}

/// Creates a key and returns it (show it once) with its state.
pub async fn create(
    store: &AggregateStore<ApiKey>,
    pepper: &[u8],
    metadata: &EventMetadata,
    key: NewKey,
) -> Result<(ApiKeyToken, ApiKeyState), CommandError<ApiKeyError>> {
    create_with(store, pepper, metadata, key, None).await
}

/// What a key issued by rotation replaces: the key it succeeds, and the first key of the
/// rotations that led here (whose rate-limit budgets the successor goes on spending).
struct Rotation {
    from: KeyId,
    root: KeyId,
}

async fn create_with(
    store: &AggregateStore<ApiKey>,
    pepper: &[u8],
    metadata: &EventMetadata,
    key: NewKey,
    rotation: Option<Rotation>,
) -> Result<(ApiKeyToken, ApiKeyState), CommandError<ApiKeyError>> {
    let token = ApiKeyToken::generate();
    let new = NewApiKey {
        name: key.name,
        description: key.description,
        project_id: key.project_id,
        scopes: key.scopes,
        key_hash: hash_key(pepper, &token),
        start: token.start(),
        expires_at: key.expires_at,
        ip_allowlist: key.ip_allowlist,
        rate_limit: key.rate_limit,
        rotated_from: rotation.as_ref().map(|r| r.from.clone()),
        rotation_root: rotation.map(|r| r.root),
    };
    let command = ApiKeyCommand::Create(Box::new(new), Utc::now());
    let committed = store.create(token.id().as_str(), command, metadata).await?;
    let state = committed
        .aggregate
        .state()
        .cloned()
        .ok_or(CommandError::Rejected(ApiKeyError::NotFound))?;
    Ok((token, state))
}

/// The key `id` if the caller may see it (its own project's keys; admins see all).
pub async fn load(
    store: &AggregateStore<ApiKey>,
    caller: &Caller,
    id: &str,
) -> Result<ApiKeyState, ApiError> {
    let id = KeyId::parse(id).ok_or_else(not_found)?;
    let (key, _) = store.load(id.as_str()).await?;
    let state = key.state().cloned().ok_or_else(not_found)?;
    if !visible(caller, &state) {
        return Err(not_found());
    }
    if let Some(project) = state.project_id {
        caller.require_in(project)?;
    }
    Ok(state)
}

fn visible(caller: &Caller, key: &ApiKeyState) -> bool {
    key.project_id
        .map_or(caller.is_admin(), |project| caller.can_see(project))
}

/// Runs a command on a key the caller can see.
pub async fn execute(
    store: &AggregateStore<ApiKey>,
    caller: &Caller,
    metadata: &EventMetadata,
    id: &str,
    command: ApiKeyCommand,
) -> Result<ApiKeyState, ApiError> {
    if caller.is_member() {
        // A member's power depends on the key's project, which never changes: check it first.
        load(store, caller, id).await?;
    }
    let id = KeyId::parse(id).ok_or_else(not_found)?;
    let guard = |key: &ApiKey| match key.state() {
        Some(state) if visible(caller, state) => {
            // The call acts in the key's project (a member's was noted by `load`).
            if let Some(project) = state.project_id {
                crate::http::context::note_project(project.as_uuid());
            }
            Ok(())
        }
        _ => Err(ApiKeyError::NotFound),
    };
    let committed = store
        .execute_guarded(id.as_str(), command, metadata, true, guard)
        .await?;
    committed.aggregate.state().cloned().ok_or_else(not_found)
}

/// Applies a settings change (scopes only narrowed and rate limits left alone unless the
/// caller is an admin).
pub async fn update(
    store: &AggregateStore<ApiKey>,
    caller: &Caller,
    metadata: &EventMetadata,
    id: &str,
    update: KeyUpdate,
) -> Result<ApiKeyState, ApiError> {
    let command = ApiKeyCommand::Update {
        update,
        by_admin: caller.is_admin(),
        now: Utc::now(),
    };
    execute(store, caller, metadata, id, command).await
}

/// Issues a successor with the same settings and lets the old key live for `grace` (409 for a
/// revoked, rotated or expired key). The successor is created first: if marking the old key
/// fails, the old key is simply still valid, and the successor is revoked.
pub async fn rotate(
    store: &AggregateStore<ApiKey>,
    pepper: &[u8],
    caller: &Caller,
    metadata: &EventMetadata,
    id: &str,
    grace: Duration,
) -> Result<(ApiKeyToken, ApiKeyState), ApiError> {
    let old = load(store, caller, id).await?;
    if old.revoked_at.is_some() {
        return Err(ApiKeyError::Revoked).map_err(|e| ApiError::from(CommandError::Rejected(e)));
    }
    if old.successor_id.is_some() {
        return Err(ApiError::from(CommandError::Rejected(
            ApiKeyError::AlreadyRotated,
        )));
    }
    if !old.is_active(Utc::now()) {
        return Err(ApiError::from(CommandError::Rejected(ApiKeyError::Expired)));
    }
    if !caller
        .scopes_in(old.project_id)
        .is_some_and(|held| old.scopes.within(&held))
    {
        return Err(ApiError::Forbidden(
            "a key cannot rotate a key with more scopes than it holds".into(),
        ));
    }
    let old_id = KeyId::parse(id).ok_or_else(not_found)?;
    let successor = NewKey {
        name: old.name.clone(),
        description: old.description.clone(),
        project_id: old.project_id,
        scopes: old.scopes.clone(),
        expires_at: old.expires_at,
        ip_allowlist: old.ip_allowlist.clone(),
        rate_limit: old.rate_limit,
    };
    let rotation = Rotation {
        root: old.budget_key(&old_id).clone(),
        from: old_id,
    };
    let (token, state) = create_with(store, pepper, metadata, successor, Some(rotation)).await?;
    let now = Utc::now();
    let command = ApiKeyCommand::Rotate {
        successor: token.id().clone(),
        grace_until: now + grace,
        now,
    };
    if let Err(refused) = execute(store, caller, metadata, id, command).await {
        // Only a refusal (the old key rotated or revoked meanwhile) is known to have left the
        // successor unused; after a store error the rotation may have committed, its answer
        // lost, and the successor is the old key's.
        if !matches!(refused, ApiError::Conflict { .. }) {
            return Err(refused);
        }
        // The successor nobody will receive must not stay usable. (Should this fail too, no
        // one holds its secret: it was never answered.)
        let revoke = ApiKeyCommand::Revoke { now: Utc::now() };
        if let Err(error) = store
            .execute(token.id().as_str(), revoke, metadata, true)
            .await
        {
            tracing::warn!(%error, successor = %token.id(), "could not revoke an unused successor");
        }
        return Err(refused);
    }
    Ok((token, state))
}
