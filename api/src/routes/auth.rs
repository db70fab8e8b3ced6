//! `/api/v1/auth/*` and `/api/v1/csrf-token`: registration, login (a JWT, and optionally the
//! session cookie), logout, the current user, password changes. Login is limited per client IP
//! and per email; a wrong password and an unknown email get the same answer.

use std::sync::Arc;

use chrono::Utc;
use herald_domain::role::AccountRole;
use herald_domain::user::Email;
use herald_domain::UserId;
use herald_store::{Actor, EventMetadata};
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::user_models::*;
use super::ApiTags;
use crate::app::users as app;
use crate::auth::session::COOKIE_NAME;
use crate::auth::{Caller, Credentials, MaybeCredentials};
use crate::http::context::RequestContext;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

pub struct AuthApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Registered {
    #[oai(status = 201)]
    Created(Json<UserDto>),
}

#[derive(ApiResponse)]
pub enum LoggedIn {
    /// The access token; with `"cookie": true` also the session cookie.
    #[oai(status = 200)]
    Ok(
        Json<LoginResponse>,
        #[oai(header = "Set-Cookie")] Option<String>,
    ),
}

#[derive(ApiResponse)]
pub enum Done {
    /// Done; a cookie session's cookie is cleared.
    #[oai(status = 204)]
    NoContent(#[oai(header = "Set-Cookie")] Option<String>),
}

fn user_of(caller: &Caller) -> Result<(UserId, herald_domain::SessionId), ApiError> {
    caller.user().ok_or_else(|| {
        ApiError::Forbidden("this endpoint is for logged-in users, not API keys".into())
    })
}

impl AuthApi {
    fn cookie(&self, token: &str, max_age: i64) -> String {
        let secure = if self.state.config.auth.cookie_secure {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        )
    }

    /// Who may register a user with `role`: anyone when registration is open (members only),
    /// otherwise admins.
    async fn may_register(
        &self,
        auth: MaybeCredentials,
        role: AccountRole,
    ) -> Result<Option<Caller>, ApiError> {
        let caller = match auth.into_credentials() {
            Some(credentials) => Some(self.state.authenticate(&credentials).await?),
            None => {
                self.state.spend_anonymous().await?;
                None
            }
        };
        let admin = caller.as_ref().is_some_and(Caller::is_admin);
        if admin || (self.state.config.auth.open_registration && role == AccountRole::Member) {
            return Ok(caller);
        }
        Err(ApiError::Forbidden(if role == AccountRole::Admin {
            "only an admin may create an admin".into()
        } else {
            "registration is closed: ask an admin to register you".into()
        }))
    }
}

fn anonymous(context: &RequestContext) -> EventMetadata {
    EventMetadata {
        actor: Actor::System("registration".into()),
        request_id: Some(context.request_id.clone()),
        ip: context.ip.clone(),
        user_agent: context.user_agent.clone(),
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Register a user
    ///
    /// Admins (users or admin keys) can always register users; anyone can when open
    /// registration is configured. Answers the user (201); 409 `EMAIL_TAKEN` for a known email.
    #[oai(path = "/auth/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        auth: MaybeCredentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<RegisterRequest>,
    ) -> ApiResult<Registered> {
        let body = body.0;
        let role = match body.role.as_deref() {
            None | Some("member") => AccountRole::Member,
            Some("admin") => AccountRole::Admin,
            Some(_) => return Err(ApiError::field("role", "must be `member` or `admin`").into()),
        };
        let caller = self.may_register(auth, role).await?;
        let email = Email::parse(&body.email)?;
        let metadata = caller
            .as_ref()
            .map_or_else(|| anonymous(context), |c| metadata(c, context));
        let (id, user) = app::register(&self.state, &metadata, email, body.password, role).await?;
        Ok(Registered::Created(Json(UserDto::render(id, &user))))
    }

    /// Log in
    ///
    /// Answers an access token (a JWT for `Authorization: Bearer`); with `"cookie": true` also
    /// sets the `herald_session` cookie (`HttpOnly`, `SameSite=Strict`). At most 10 attempts per
    /// 15 minutes per client IP and per email (then 429 with `Retry-After`).
    #[oai(path = "/auth/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        Data(context): Data<&RequestContext>,
        body: JsonBody<LoginRequest>,
    ) -> ApiResult<LoggedIn> {
        let body = body.0;
        app::password_attempt(&self.state, context, &body.email).await?;
        let (claims, token, user) =
            app::login(&self.state, &anonymous(context), &body.email, body.password).await?;
        // The user who logged in is this call's actor, as in the `user.logged_in` event.
        crate::http::context::set_actor("user", claims.sub.to_string(), None);
        let expires_in = claims.exp - Utc::now().timestamp();
        let cookie = body
            .cookie
            .unwrap_or(false)
            .then(|| self.cookie(&token, expires_in));
        let response = LoginResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in,
            user: UserDto::render(claims.sub, &user),
        };
        Ok(LoggedIn::Ok(Json(response), cookie))
    }

    /// Log out
    ///
    /// Ends the session: its token and cookie are refused from the next request on.
    #[oai(path = "/auth/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
    ) -> ApiResult<Done> {
        let caller = self.state.authenticate(&auth).await?;
        let (id, session) = user_of(&caller)?;
        let command = herald_domain::user::UserCommand::EndSession {
            session_id: session,
            now: Utc::now(),
        };
        app::execute(&self.state, &metadata(&caller, context), id, command).await?;
        let clear = matches!(auth, Credentials::Cookie(_)).then(|| self.cookie("", 0));
        Ok(Done::NoContent(clear))
    }

    /// The current user
    ///
    /// The logged-in user and their role in each of their projects.
    #[oai(path = "/auth/me", method = "get", operation_id = "me")]
    async fn me(&self, auth: Credentials) -> ApiResult<Json<Me>> {
        let caller = self.state.authenticate(&auth).await?;
        let (id, _) = user_of(&caller)?;
        let user = self
            .state
            .users_directory
            .get(id)
            .await
            .ok_or_else(app::not_found)?;
        let projects = user
            .projects
            .iter()
            .map(|(project, role)| Membership {
                project_id: project.as_uuid(),
                role: role.as_str().to_owned(),
            })
            .collect();
        Ok(Json(Me {
            user: UserDto::render(id, &user),
            projects,
        }))
    }

    /// Change the password
    ///
    /// Checks the current password, stores the new one, and ends every other session of the
    /// user (this one stays valid). The check counts against the login limit, per client IP
    /// and per email (then 429 with `Retry-After`).
    #[oai(
        path = "/auth/change-password",
        method = "post",
        operation_id = "changePassword"
    )]
    async fn change_password(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<ChangePasswordRequest>,
    ) -> ApiResult<Done> {
        let caller = self.state.authenticate(&auth).await?;
        let user = user_of(&caller)?;
        let body = body.0;
        let metadata = metadata(&caller, context);
        app::change_password(
            &self.state,
            &metadata,
            context,
            user,
            body.current_password,
            body.new_password,
        )
        .await?;
        Ok(Done::NoContent(None))
    }

    /// A CSRF token for this session
    ///
    /// Browser sessions (cookie) send it as `X-CSRF-Token` on every state-changing request. It
    /// is bound to the session and ends with it.
    #[oai(path = "/csrf-token", method = "get", operation_id = "csrfToken")]
    async fn csrf_token(&self, auth: Credentials) -> ApiResult<Json<CsrfToken>> {
        let caller = self.state.authenticate(&auth).await?;
        let (_, session) = user_of(&caller)?;
        let csrf_token = self.state.users_directory.keys.csrf_token(session);
        Ok(Json(CsrfToken { csrf_token }))
    }
}
