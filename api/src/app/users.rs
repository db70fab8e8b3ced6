//! Users on behalf of a caller: registration, login and logout, password changes and project
//! roles. A password's argon2id hash lives in `user_credentials`, never in an event; the row is
//! written before `user.created` (its unique email refuses a second registration of the same
//! address) and removed again if the event cannot be appended.

use chrono::{DateTime, Duration, Utc};
use herald_domain::role::{AccountRole, ProjectRole};
use herald_domain::user::{check_new_password, Email, UserCommand, UserError, UserState};
use herald_domain::{ProjectId, SessionId, UserId};
use herald_store::{Actor, CommandError, EventMetadata};

use crate::auth::passwords;
use crate::auth::session::Claims;
use crate::http::context::RequestContext;
use crate::http::problem::ApiError;
use crate::state::AppState;

impl From<CommandError<UserError>> for ApiError {
    fn from(error: CommandError<UserError>) -> Self {
        match error {
            CommandError::Rejected(UserError::NotFound) => not_found(),
            CommandError::Rejected(UserError::NotAMember) => ApiError::NotFound {
                code: "MEMBER_NOT_FOUND",
                detail: "the user is not a member of this project".into(),
            },
            CommandError::Rejected(UserError::AlreadyExists) => email_taken(),
            CommandError::Conflict => ApiError::Conflict {
                code: "CONCURRENT_MODIFICATION",
                detail: "the user was changed concurrently; retry the request".into(),
            },
            CommandError::Store(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
        }
    }
}

pub fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "USER_NOT_FOUND",
        detail: "user not found".into(),
    }
}

fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: "EMAIL_TAKEN",
        detail: "a user with this email already exists".into(),
    }
}

/// Wrong email or password: one answer for both.
fn invalid_credentials() -> ApiError {
    ApiError::Unauthenticated
}

/// Creates a user with `password` (checked against the password rules here).
pub async fn register(
    state: &AppState,
    metadata: &EventMetadata,
    email: Email,
    password: String,
    role: AccountRole,
) -> Result<(UserId, UserState), ApiError> {
    check_new_password("password", &password)?;
    let hash = passwords::hash(password)
        .await
        .map_err(ApiError::Internal)?;
    let id = UserId::generate();
    let inserted = sqlx::query(
        "INSERT INTO user_credentials (user_id, email, password_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(id.as_uuid())
    .bind(email.as_str())
    .bind(&hash)
    .execute(&state.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(email_taken());
    }
    let command = UserCommand::Create {
        email,
        role,
        now: Utc::now(),
    };
    match state.users.create(&id.to_string(), command, metadata).await {
        Ok(committed) => {
            let user = committed.aggregate.state().cloned().ok_or_else(not_found)?;
            Ok((id, user))
        }
        Err(error) => {
            sqlx::query("DELETE FROM user_credentials WHERE user_id = $1")
                .bind(id.as_uuid())
                .execute(&state.pool)
                .await?;
            Err(error.into())
        }
    }
}

/// A new session for the user with this email and password: the signed token's claims, the
/// token, and the user. Unknown emails and wrong passwords cost the same and answer the same.
pub async fn login(
    state: &AppState,
    metadata: &EventMetadata,
    email: &str,
    password: String,
) -> Result<(Claims, String, UserState), ApiError> {
    let email = email.trim().to_lowercase();
    let stored: Option<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT user_id, password_hash FROM user_credentials WHERE email = $1")
            .bind(&email)
            .fetch_optional(&state.pool)
            .await?;
    let (id, hash) = stored.map_or((None, None), |(id, hash)| (Some(id), Some(hash)));
    let verified = hash.clone();
    let password_ok = passwords::verify_or_burn(password, hash).await;
    let id = match id {
        Some(id) if password_ok => UserId::from_uuid(id),
        _ => return Err(invalid_credentials()),
    };
    let now = Utc::now();
    let ttl = Duration::seconds(state.config.auth.session_ttl_seconds.into());
    let claims = Claims {
        sub: id,
        sid: SessionId::generate(),
        iat: now.timestamp(),
        exp: (now + ttl).timestamp(),
    };
    let expires_at = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now + ttl);
    let metadata = EventMetadata {
        actor: Actor::User(id.to_string()),
        ..metadata.clone()
    };
    let command = UserCommand::StartSession {
        session_id: claims.sid,
        expires_at,
        now,
    };
    let user = execute(state, &metadata, id, command).await?;
    // A password change that landed while this password was being checked ends every session
    // it finds; one started after it did not exist then. So once the session is in the log,
    // the password is read again: if it changed, the session ends and the login fails (a
    // change after this read comes after the session in the log and ends it itself).
    let current: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM user_credentials WHERE user_id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&state.pool)
            .await?;
    if current != verified {
        let command = UserCommand::EndSession {
            session_id: claims.sid,
            now: Utc::now(),
        };
        if let Err(error) = execute(state, &metadata, id, command).await {
            // Its token was never issued, so nobody holds the session it leaves open.
            tracing::warn!(?error, "could not end a session whose password changed");
        }
        return Err(invalid_credentials());
    }
    let token = state.users_directory.keys.issue(&claims);
    Ok((claims, token, user))
}

/// Runs a command on a user and drops this replica's cached copy at once (other replicas
/// drop theirs when the trigger's notification arrives).
pub async fn execute(
    state: &AppState,
    metadata: &EventMetadata,
    id: UserId,
    command: UserCommand,
) -> Result<UserState, ApiError> {
    let committed = state
        .users
        .execute(&id.to_string(), command, metadata, true)
        .await;
    state.users_directory.invalidate(&id.to_string());
    committed?.aggregate.state().cloned().ok_or_else(not_found)
}

/// Counts one password guess for the email `email` from the client of `context` against the
/// login limit (per client IP and per email): 429 `RATE_LIMIT_EXCEEDED`, with `Retry-After`
/// and the policy's headers, once either is spent. Logins and password changes share it, so
/// a stolen session cannot guess its user's password faster than a login could.
pub async fn password_attempt(
    state: &AppState,
    context: &RequestContext,
    email: &str,
) -> Result<(), ApiError> {
    let subjects = [
        crate::limits::client::ip_subject(
            context.ip.as_deref().and_then(|ip| ip.parse().ok()),
            state.config.rate_limits.ipv6_prefix,
        ),
        format!("email:{}", email.trim().to_lowercase()),
    ];
    let Err(wait) = state.login_limiter.attempt(&subjects).await else {
        return Ok(());
    };
    let refused = state.login_limiter.refused(wait);
    let retry_after_seconds = refused.reset_seconds().max(1);
    crate::http::context::set_rate_headers(crate::limits::RateHeaders {
        applied: vec![refused],
        ..Default::default()
    });
    Err(ApiError::TooManyRequests {
        detail: "too many password attempts; try again later".into(),
        retry_after_seconds,
        violated: vec!["login".into()],
    })
}

/// Replaces the password after checking the current one (a guess the login limit counts);
/// every other session ends.
pub async fn change_password(
    state: &AppState,
    metadata: &EventMetadata,
    context: &RequestContext,
    (id, session): (UserId, SessionId),
    current: String,
    new: String,
) -> Result<(), ApiError> {
    check_new_password("new_password", &new)?;
    let stored: Option<(String, String)> =
        sqlx::query_as("SELECT email, password_hash FROM user_credentials WHERE user_id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&state.pool)
            .await?;
    let (email, stored) = stored.map_or((None, None), |(email, hash)| (Some(email), Some(hash)));
    if let Some(email) = email {
        password_attempt(state, context, &email).await?;
    }
    if !passwords::verify_or_burn(current, stored).await {
        return Err(ApiError::field(
            "current_password",
            "is not the current password",
        ));
    }
    let hash = passwords::hash(new).await.map_err(ApiError::Internal)?;
    sqlx::query(
        "UPDATE user_credentials SET password_hash = $2, updated_at = now() WHERE user_id = $1",
    )
    .bind(id.as_uuid())
    .bind(&hash)
    .execute(&state.pool)
    .await?;
    let command = UserCommand::ChangePassword {
        keep_session: Some(session),
        now: Utc::now(),
    };
    execute(state, metadata, id, command).await?;
    Ok(())
}

/// Gives a user a role in a project (or changes it).
pub async fn set_role(
    state: &AppState,
    metadata: &EventMetadata,
    user: UserId,
    project_id: ProjectId,
    role: ProjectRole,
) -> Result<UserState, ApiError> {
    let command = UserCommand::SetProjectRole {
        project_id,
        role,
        now: Utc::now(),
    };
    execute(state, metadata, user, command).await
}
