//! Request and response bodies of the auth and member endpoints. No response ever carries a
//! password or its hash; the access token appears only in the answer to login.

use chrono::{DateTime, Utc};
use herald_domain::user::UserState;
use herald_domain::UserId;
use poem_openapi::Object;
use serde::Deserialize;
use uuid::Uuid;

/// `POST /auth/register` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// At least 10 characters.
    pub password: String,
    /// `member` (default) or `admin`; only admins may create admins.
    #[oai(nullable)]
    pub role: Option<String>,
}

/// `POST /auth/login` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Also set the `herald_session` cookie (for browsers). Default false.
    #[oai(nullable)]
    pub cookie: Option<bool>,
}

/// `POST /auth/change-password` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    /// At least 10 characters.
    pub new_password: String,
}

/// A user.
#[derive(Debug, Object)]
pub struct UserDto {
    pub id: Uuid,
    pub email: String,
    /// `admin` or `member`.
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl UserDto {
    pub fn render(id: UserId, user: &UserState) -> Self {
        Self {
            id: id.as_uuid(),
            email: user.email.as_str().to_owned(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }
    }
}

/// A project the user belongs to, and the role there.
#[derive(Debug, Object)]
pub struct Membership {
    pub project_id: Uuid,
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

/// `GET /auth/me`: the user and their projects.
#[derive(Debug, Object)]
pub struct Me {
    #[oai(flatten)]
    pub user: UserDto,
    pub projects: Vec<Membership>,
}

/// The answer to a login.
#[derive(Debug, Object)]
pub struct LoginResponse {
    /// A JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: i64,
    pub user: UserDto,
}

#[derive(Debug, Object)]
pub struct CsrfToken {
    /// Send as `X-CSRF-Token` on state-changing requests made with the session cookie.
    pub csrf_token: String,
}

/// `PUT /projects/{id}/members/{user_id}` body.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct MemberPut {
    /// `owner`, `editor` or `viewer`.
    pub role: String,
}

/// A member of a project.
#[derive(Debug, Object)]
pub struct MemberDto {
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub role: String,
}

#[derive(Debug, Object)]
pub struct MemberList {
    pub data: Vec<MemberDto>,
}
