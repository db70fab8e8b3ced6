//! `/api/v1/projects/{id}/members`: who belongs to a project and with which role. Admins and
//! the project's owners manage members; every member may list them. A project keeps an owner:
//! its last one is neither removed nor given another role (`keep_an_owner`).

use std::sync::Arc;

use herald_domain::role::ProjectRole;
use herald_domain::user::UserCommand;
use herald_domain::{FieldError, ProjectId, UserId};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::user_models::*;
use super::ApiTags;
use crate::app::users as app;
use crate::auth::{Caller, Credentials};
use crate::http::context::RequestContext;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

pub struct MembersApi {
    pub state: Arc<AppState>,
}

#[derive(ApiResponse)]
pub enum Removed {
    #[oai(status = 204)]
    NoContent,
}

fn project_not_found() -> ApiError {
    ApiError::NotFound {
        code: "PROJECT_NOT_FOUND",
        detail: "project not found".into(),
    }
}

impl MembersApi {
    /// The project, if it exists and the caller can see it (404 otherwise).
    async fn project(&self, caller: &Caller, id: Uuid) -> Result<ProjectId, ApiError> {
        let project = ProjectId::from_uuid(id);
        if !caller.can_see(project) {
            return Err(project_not_found());
        }
        let (loaded, _) = self
            .state
            .projects
            .load(&id.to_string())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        loaded.state().ok_or_else(project_not_found)?;
        // The call is about this project: its request-log record belongs there, refused or not
        // (a member's attempt to change the roles is part of the project's trail).
        crate::http::request_context::note_project(id);
        Ok(project)
    }

    /// 409 `LAST_OWNER` when `user` owns `project` (as its own log says) and no other member
    /// does (as the members list says: an owner added a moment ago may not be in it yet, so
    /// the refusal can be retried; two owners demoting each other at the same instant can
    /// both pass, and an admin then names a new owner).
    async fn keep_an_owner(&self, project: ProjectId, user: UserId) -> Result<(), ApiError> {
        let (loaded, _) = self
            .state
            .users
            .load(&user.to_string())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let owns = loaded
            .state()
            .is_some_and(|u| u.projects.get(&project) == Some(&ProjectRole::Owner));
        if !owns {
            return Ok(());
        }
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM project_members \
              WHERE project_id = $1 AND role = 'owner' AND user_id <> $2",
        )
        .bind(project.as_uuid())
        .bind(user.as_uuid())
        .fetch_one(&self.state.pool)
        .await?;
        if others == 0 {
            return Err(ApiError::Conflict {
                code: "LAST_OWNER",
                detail: "this is the project's last owner: make another member owner first".into(),
            });
        }
        Ok(())
    }

    /// 403 unless the caller is an admin or an owner of `project`.
    fn require_manager(caller: &Caller, project: ProjectId) -> Result<(), ApiError> {
        let owner = caller
            .role_in(project)
            .is_some_and(ProjectRole::manages_members);
        if caller.is_admin() || owner {
            return Ok(());
        }
        Err(ApiError::Forbidden(
            "only admins and the project's owners manage its members".into(),
        ))
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Projects")]
impl MembersApi {
    /// List a project's members
    ///
    /// Any member of the project, and admins.
    #[oai(
        path = "/projects/:id/members",
        method = "get",
        operation_id = "listMembers"
    )]
    async fn list(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<MemberList>> {
        let caller = self.state.authenticate(&auth).await?;
        let project = self.project(&caller, id.0).await?;
        let rows = herald_projections::users::members(&self.state.pool, project.as_uuid()).await?;
        let data = rows
            .into_iter()
            .map(|row| MemberDto {
                project_id: project.as_uuid(),
                user_id: row.user_id,
                email: row.email,
                role: row.role,
            })
            .collect();
        Ok(Json(MemberList { data }))
    }

    /// Add a member or change their role
    ///
    /// Admins and the project's owners. Idempotent: the same role again changes nothing. The
    /// project's last owner cannot be given another role (409 `LAST_OWNER`).
    #[oai(
        path = "/projects/:id/members/:user_id",
        method = "put",
        operation_id = "putMember"
    )]
    async fn put(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
        body: JsonBody<MemberPut>,
    ) -> ApiResult<Json<MemberDto>> {
        let caller = self.state.authenticate(&auth).await?;
        let project = self.project(&caller, id.0).await?;
        Self::require_manager(&caller, project)?;
        let role: ProjectRole = body
            .0
            .role
            .parse()
            .map_err(|message: String| FieldError::new("role", message))?;
        let user = UserId::from_uuid(user_id.0);
        if role != ProjectRole::Owner {
            self.keep_an_owner(project, user).await?;
        }
        let metadata = metadata(&caller, context);
        let state = app::set_role(&self.state, &metadata, user, project, role).await?;
        Ok(Json(MemberDto {
            project_id: project.as_uuid(),
            user_id: user.as_uuid(),
            email: state.email.as_str().to_owned(),
            role: role.as_str().to_owned(),
        }))
    }

    /// Remove a member
    ///
    /// Admins and the project's owners. 404 `MEMBER_NOT_FOUND` if the user is not a member;
    /// 409 `LAST_OWNER` for the project's last owner.
    #[oai(
        path = "/projects/:id/members/:user_id",
        method = "delete",
        operation_id = "deleteMember"
    )]
    async fn delete(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> ApiResult<Removed> {
        let caller = self.state.authenticate(&auth).await?;
        let project = self.project(&caller, id.0).await?;
        Self::require_manager(&caller, project)?;
        let command = UserCommand::RemoveFromProject {
            project_id: project,
            now: chrono::Utc::now(),
        };
        let user = UserId::from_uuid(user_id.0);
        self.keep_an_owner(project, user).await?;
        app::execute(&self.state, &metadata(&caller, context), user, command).await?;
        Ok(Removed::NoContent)
    }
}
