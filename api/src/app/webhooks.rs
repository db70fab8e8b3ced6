//! Webhook endpoints on behalf of a caller: creation (the signing secret is stored before the
//! `webhook_endpoint.created` event, never in it), changes, deletion, secret rotation, and the
//! tenancy checks shared by the endpoint and delivery routes.

use chrono::{DateTime, Utc};
use herald_domain::webhook_endpoint::{
    EndpointCommand, EndpointError, EndpointSettings, EndpointState,
};
use herald_domain::ProjectId;
use herald_store::{CommandError, EventMetadata};
use herald_webhooks::signature::SigningSecret;
use poem_openapi::types::MaybeUndefined;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::http::problem::ApiError;
use crate::state::AppState;

pub fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "WEBHOOK_NOT_FOUND",
        detail: "webhook endpoint not found".into(),
    }
}

impl From<CommandError<EndpointError>> for ApiError {
    fn from(error: CommandError<EndpointError>) -> Self {
        match error {
            CommandError::Rejected(EndpointError::NotFound) => not_found(),
            CommandError::Rejected(EndpointError::Invalid(errors)) => ApiError::Validation(errors),
            CommandError::Rejected(EndpointError::AlreadyExists) | CommandError::Conflict => {
                ApiError::Conflict {
                    code: "CONCURRENT_MODIFICATION",
                    detail: "the endpoint was changed concurrently; retry the request".into(),
                }
            }
            CommandError::Store(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

/// The project a new endpoint goes to: the key's own, or the one named (which must be visible);
/// `None` when an admin asked for an account-wide endpoint with `"project_id": null`.
pub async fn target_project(
    state: &AppState,
    caller: &Caller,
    asked: MaybeUndefined<Uuid>,
) -> Result<Option<ProjectId>, ApiError> {
    let project = match (caller.project_id(), asked) {
        (Some(own), MaybeUndefined::Undefined) => return Ok(Some(own)),
        (Some(own), MaybeUndefined::Value(asked)) if own.as_uuid() == asked => {
            return Ok(Some(own))
        }
        (Some(_), _) => {
            return Err(ApiError::field(
                "project_id",
                "must be the key's own project",
            ))
        }
        (None, MaybeUndefined::Null) if caller.is_admin() => return Ok(None),
        (None, MaybeUndefined::Null) => {
            return Err(ApiError::Forbidden(
                "only admins create account-wide endpoints (`\"project_id\": null`)".into(),
            ))
        }
        (None, MaybeUndefined::Undefined) => {
            return Err(ApiError::field(
                "project_id",
                "required unless the caller is a key bound to one project \
                 (admins may send null for an account-wide endpoint)",
            ))
        }
        (None, MaybeUndefined::Value(asked)) => ProjectId::from_uuid(asked),
    };
    let (loaded, _) = state
        .projects
        .load(&project.to_string())
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    if loaded.state().is_none() || !caller.can_see(project) {
        return Err(ApiError::field("project_id", "no such project"));
    }
    caller.require_in(project)?;
    Ok(Some(project))
}

/// The endpoint as of its latest event, if the caller may see it.
pub async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<EndpointState, ApiError> {
    let (endpoint, _) = state.webhook_endpoints.load(&id.to_string()).await?;
    let endpoint = endpoint.state().cloned().ok_or_else(not_found)?;
    match endpoint.project_id {
        Some(project) if caller.can_see(project) => caller.require_in(project)?,
        None if caller.is_admin() => {}
        _ => return Err(not_found()),
    }
    Ok(endpoint)
}

pub async fn create(
    state: &AppState,
    metadata: &EventMetadata,
    project: Option<ProjectId>,
    settings: EndpointSettings,
) -> Result<(Uuid, EndpointState, String), ApiError> {
    let id = Uuid::now_v7();
    let mut settings = settings;
    settings.headers = state.header_seal.seal_all(id, &settings.headers);
    let secret = SigningSecret::generate();
    sqlx::query("INSERT INTO webhook_secrets (endpoint_id, secret) VALUES ($1, $2)")
        .bind(id)
        .bind(&secret)
        .execute(&state.pool)
        .await?;
    let command = EndpointCommand::Create {
        project_id: project,
        settings,
        now: Utc::now(),
    };
    let committed = state
        .webhook_endpoints
        .create(&id.to_string(), command, metadata)
        .await?;
    let endpoint = committed.aggregate.state().cloned().ok_or_else(not_found)?;
    Ok((id, endpoint, secret))
}

/// Runs a command on an endpoint the caller may see and change.
pub async fn execute(
    state: &AppState,
    caller: &Caller,
    metadata: &EventMetadata,
    id: Uuid,
    command: EndpointCommand,
) -> Result<EndpointState, ApiError> {
    load(state, caller, id).await?;
    let committed = state
        .webhook_endpoints
        .execute(&id.to_string(), command, metadata, true)
        .await?;
    committed.aggregate.state().cloned().ok_or_else(not_found)
}

pub async fn delete(
    state: &AppState,
    caller: &Caller,
    metadata: &EventMetadata,
    id: Uuid,
) -> Result<(), ApiError> {
    load(state, caller, id).await?;
    let command = EndpointCommand::Delete { now: Utc::now() };
    state
        .webhook_endpoints
        .execute(&id.to_string(), command, metadata, true)
        .await?;
    Ok(())
}

/// Adds a new secret; the previous ones sign until `previous_until` (never longer than before).
pub async fn rotate_secret(
    state: &AppState,
    metadata: &EventMetadata,
    id: Uuid,
    previous_until: DateTime<Utc>,
) -> Result<String, ApiError> {
    let secret = SigningSecret::generate();
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "UPDATE webhook_secrets SET expires_at = least(coalesce(expires_at, $2), $2) \
          WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(id)
    .bind(previous_until)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_secrets (endpoint_id, secret) VALUES ($1, $2)")
        .bind(id)
        .bind(&secret)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let command = EndpointCommand::RecordSecretRotation {
        previous_valid_until: previous_until,
        now: Utc::now(),
    };
    state
        .webhook_endpoints
        .execute(&id.to_string(), command, metadata, true)
        .await?;
    Ok(secret)
}

/// An example of what a receiver gets for `kind`.
pub fn example_payload(kind: &str) -> Value {
    let project = "01935a3e-0000-7000-8000-000000000001";
    let data = match kind.split('.').next().unwrap_or_default() {
        "job" => {
            json!({"job_id": "01935a3e-0000-7000-8000-0000000000a1", "project_id": project, "at": "2026-01-01T12:00:00Z"})
        }
        "api_key" => {
            json!({"api_key_id": "Zp3kQ8rT2mN5vB7x", "project_id": project, "at": "2026-01-01T12:00:00Z"})
        }
        "webhook_endpoint" if kind == "webhook_endpoint.secret_rotated" => {
            json!({"webhook_endpoint_id": "01935a3e-0000-7000-8000-0000000000b1", "project_id": project,
                   "previous_valid_until": "2026-01-02T12:00:00Z", "at": "2026-01-01T12:00:00Z"})
        }
        "webhook_endpoint" => {
            json!({"webhook_endpoint_id": "01935a3e-0000-7000-8000-0000000000b1", "project_id": project, "at": "2026-01-01T12:00:00Z"})
        }
        "project" => {
            json!({"project_id": project, "name": "Render farm", "at": "2026-01-01T12:00:00Z"})
        }
        "user" => {
            let user = "01935a3e-0000-7000-8000-0000000000c1";
            let session = "01935a3e-0000-7000-8000-0000000000d1";
            match kind {
                "user.project_role_granted" => {
                    json!({"user_id": user, "project_id": project, "role": "editor", "at": "2026-01-01T12:00:00Z"})
                }
                "user.project_role_revoked" => {
                    json!({"user_id": user, "project_id": project, "at": "2026-01-01T12:00:00Z"})
                }
                "user.logged_in" => {
                    json!({"user_id": user, "session_id": session, "expires_at": "2026-01-02T12:00:00Z", "at": "2026-01-01T12:00:00Z"})
                }
                "user.logged_out" => {
                    json!({"user_id": user, "session_id": session, "at": "2026-01-01T12:00:00Z"})
                }
                "user.password_changed" => {
                    json!({"user_id": user, "kept_session": session, "at": "2026-01-01T12:00:00Z"})
                }
                _ => {
                    json!({"user_id": user, "email": "ada@example.com", "role": "member", "at": "2026-01-01T12:00:00Z"})
                }
            }
        }
        _ => {
            json!({"webhook_endpoint_id": "01935a3e-0000-7000-8000-0000000000b1", "project_id": project})
        }
    };
    json!({"id": "evt_1042", "type": kind, "timestamp": "2026-01-01T12:00:00.000Z", "data": data})
}
