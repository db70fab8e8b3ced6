//! Unversioned system endpoints for load balancers and orchestrators: `/health` and `/live`
//! (the process answers), `/ready` (the database answers and every migration is applied).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

#[handler]
pub fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[handler]
pub async fn ready(Data(state): Data<&Arc<AppState>>) -> Response {
    let expected = herald_store::MIGRATOR.iter().count() as i64;
    let applied: Result<i64, sqlx::Error> =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&state.pool)
            .await;
    let (status, body) = match applied {
        Ok(n) if n >= expected => (
            StatusCode::OK,
            json!({"status": "ready", "database": "ok", "migrations": n}),
        ),
        Ok(n) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "database": "ok", "migrations": n, "expected_migrations": expected}),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not_ready", "database": "unreachable"}),
            )
        }
    };
    (status, Json(body)).into_response()
}
