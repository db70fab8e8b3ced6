//! `/api/v1/projects`: create projects (admin), list and read the ones the caller can see.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::project::ProjectName;
use herald_domain::{ProjectId, Scope};
use herald_store::CommandError;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use crate::app::projects as app;
use crate::auth::Credentials;
use crate::http::context::RequestContext;
use crate::http::cursor;
use crate::http::json_body::JsonBody;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::{metadata, AppState};

pub struct ProjectsApi {
    pub state: Arc<AppState>,
}

#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreate {
    /// 1–100 characters.
    pub name: String,
}

/// A project.
#[derive(Debug, Object)]
pub struct ProjectDto {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ProjectList {
    pub data: Vec<ProjectDto>,
    pub has_more: bool,
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum Created {
    #[oai(status = 201)]
    Created(Json<ProjectDto>, #[oai(header = "Location")] String),
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "PROJECT_NOT_FOUND",
        detail: "project not found".into(),
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Projects")]
impl ProjectsApi {
    /// Create a project
    ///
    /// Scope `admin`.
    #[oai(path = "/projects", method = "post", operation_id = "createProject")]
    async fn create(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        body: JsonBody<ProjectCreate>,
    ) -> ApiResult<Created> {
        let caller = self.state.authorize(&auth, Scope::Admin).await?;
        let name = ProjectName::parse(&body.0.name)?;
        let (id, project) = app::create(&self.state.projects, &metadata(&caller, context), name)
            .await
            .map_err(|e| match e {
                CommandError::Store(cause) => ApiError::Internal(anyhow::anyhow!(cause)),
                other => ApiError::internal(anyhow::anyhow!("{other}")),
            })?;
        let dto = ProjectDto {
            id: id.as_uuid(),
            name: project.name.as_str().to_owned(),
            created_at: project.created_at,
        };
        Ok(Created::Created(
            Json(dto),
            format!("/api/v1/projects/{id}"),
        ))
    }

    /// List projects
    ///
    /// In creation order. Admins see every project; a project key its own; a user the
    /// projects they belong to.
    #[oai(path = "/projects", method = "get", operation_id = "listProjects")]
    async fn list(
        &self,
        auth: Credentials,
        /// 1–100, default 20.
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> ApiResult<Json<ProjectList>> {
        let caller = self.state.authenticate(&auth).await?;
        let limit = cursor::limit(limit.0)?;
        let after: Option<Uuid> = cursor.0.as_deref().map(cursor::decode).transpose()?;
        let mut rows = herald_projections::projects::list(
            &self.state.pool,
            caller.visible_projects(),
            after,
            limit + 1,
        )
        .await?;
        let has_more = cursor::page(&mut rows, limit);
        let next_cursor = has_more
            .then(|| rows.last())
            .flatten()
            .map(|r| cursor::encode(&r.id));
        let data = rows
            .into_iter()
            .map(|r| ProjectDto {
                id: r.id,
                name: r.name,
                created_at: r.created_at,
            })
            .collect();
        Ok(Json(ProjectList {
            data,
            has_more,
            next_cursor,
        }))
    }

    /// Rename a project
    ///
    /// Admins and the project's owners.
    #[oai(
        path = "/projects/:id",
        method = "patch",
        operation_id = "updateProject"
    )]
    async fn update(
        &self,
        auth: Credentials,
        Data(context): Data<&RequestContext>,
        id: Path<Uuid>,
        body: JsonBody<ProjectCreate>,
    ) -> ApiResult<Json<ProjectDto>> {
        let caller = self.state.authenticate(&auth).await?;
        let project = ProjectId::from_uuid(id.0);
        if !caller.can_see(project) {
            return Err(not_found().into());
        }
        crate::http::request_context::note_project(id.0);
        let owner = caller
            .role_in(project)
            .is_some_and(herald_domain::role::ProjectRole::manages_members);
        if !(caller.is_admin() || owner) {
            return Err(ApiError::Forbidden(
                "only admins and the project's owners rename it".into(),
            )
            .into());
        }
        let name = ProjectName::parse(&body.0.name)?;
        let command = herald_domain::project::ProjectCommand::Rename {
            name,
            now: chrono::Utc::now(),
        };
        let committed = self
            .state
            .projects
            .execute(
                &id.0.to_string(),
                command,
                &metadata(&caller, context),
                true,
            )
            .await
            .map_err(|e| match e {
                CommandError::Rejected(_) => not_found(),
                other => ApiError::internal(anyhow::anyhow!("{other}")),
            })?;
        let state = committed.aggregate.state().ok_or_else(not_found)?;
        Ok(Json(ProjectDto {
            id: id.0,
            name: state.name.as_str().to_owned(),
            created_at: state.created_at,
        }))
    }

    /// Get a project
    ///
    /// Admins see every project; other keys only their own, users the ones they belong to.
    #[oai(path = "/projects/:id", method = "get", operation_id = "getProject")]
    async fn get(&self, auth: Credentials, id: Path<Uuid>) -> ApiResult<Json<ProjectDto>> {
        // Any valid key may read its own project, whatever its scopes.
        let caller = self.state.authenticate(&auth).await?;
        if !caller.can_see(ProjectId::from_uuid(id.0)) {
            return Err(not_found().into());
        }
        let (project, _) = self
            .state
            .projects
            .load(&id.0.to_string())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
        let project = project.state().ok_or_else(not_found)?;
        crate::http::request_context::note_project(id.0);
        Ok(Json(ProjectDto {
            id: id.0,
            name: project.name.as_str().to_owned(),
            created_at: project.created_at,
        }))
    }
}
