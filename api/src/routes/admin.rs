//! `/api/v1/admin`: operating Herald. Scope `admin`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use herald_domain::Scope;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::auth::Credentials;
use crate::http::problem::{ApiError, ApiResult};
use crate::state::AppState;

pub struct AdminApi {
    pub state: Arc<AppState>,
}

/// Where one projection stands.
#[derive(Debug, Object)]
pub struct ProjectionDto {
    pub name: String,
    /// The checkpoint: transaction id of the last event read...
    pub tx_id: i64,
    /// ...and its global position.
    pub global_position: i64,
    /// Events read since the last rebuild.
    pub events_applied: i64,
    /// Events in the log not read yet.
    pub lag: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ProjectionList {
    pub data: Vec<ProjectionDto>,
}

#[derive(ApiResponse)]
pub enum RebuildAccepted {
    /// The read model was emptied; its runner is replaying the log.
    #[oai(status = 202)]
    Accepted(Json<ProjectionDto>),
}

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Admin")]
impl AdminApi {
    /// List projections
    ///
    /// Each read model's checkpoint and how far it lags the log.
    #[oai(
        path = "/admin/projections",
        method = "get",
        operation_id = "listProjections"
    )]
    async fn projections(&self, auth: Credentials) -> ApiResult<Json<ProjectionList>> {
        self.state.authorize(&auth, Scope::Admin).await?;
        let data = self.statuses().await?;
        Ok(Json(ProjectionList { data }))
    }

    /// Rebuild a projection
    ///
    /// Empties the read model and replays it from the log in the background; the API keeps
    /// answering (reads by id stay exact, lists fill up as the replay proceeds).
    #[oai(
        path = "/admin/projections/:name/rebuild",
        method = "post",
        operation_id = "rebuildProjection"
    )]
    async fn rebuild(&self, auth: Credentials, name: Path<String>) -> ApiResult<RebuildAccepted> {
        self.state.authorize(&auth, Scope::Admin).await?;
        let projection = self
            .state
            .projections
            .clone()
            .into_iter()
            .find(|p| p.name() == name.0)
            .ok_or_else(|| ApiError::NotFound {
                code: "PROJECTION_NOT_FOUND",
                detail: format!("no projection named `{}`", name.0),
            })?;
        herald_projections::runtime::rebuild(&self.state.pool, projection.as_ref())
            .await
            .map_err(ApiError::Internal)?;
        let status = self
            .statuses()
            .await?
            .into_iter()
            .find(|s| s.name == name.0)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("checkpoint vanished")))?;
        Ok(RebuildAccepted::Accepted(Json(status)))
    }
}

impl AdminApi {
    async fn statuses(&self) -> Result<Vec<ProjectionDto>, ApiError> {
        let statuses = herald_projections::runtime::status(&self.state.pool).await?;
        Ok(statuses
            .into_iter()
            .map(|s| ProjectionDto {
                name: s.name,
                tx_id: s.tx_id,
                global_position: s.global_position,
                events_applied: s.events_applied,
                lag: s.lag,
                updated_at: s.updated_at,
            })
            .collect())
    }
}
