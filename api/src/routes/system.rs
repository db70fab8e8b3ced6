//! Unversioned system endpoints for load balancers and orchestrators: `/health` and `/live`
//! (the process answers), `/ready` (the database answers and every migration is applied), and
//! `/health/detailed` (each part: database, projections, webhook backlog, rate limits, audit).

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

/// Each part's state. 200 while the database answers (a degraded part is reported, not fatal:
/// without Redis the rate limits fall back to each replica's own), 503 otherwise.
#[handler]
pub async fn detailed(Data(state): Data<&Arc<AppState>>) -> Response {
    let started = std::time::Instant::now();
    let projections = herald_projections::runtime::status(&state.pool).await;
    let database_ms = started.elapsed().as_secs_f64() * 1000.0;
    let Ok(projections) = projections else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "database": {"status": "unreachable"}})),
        )
            .into_response();
    };
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()",
    )
    .fetch_one(&state.pool)
    .await
    .unwrap_or(-1);
    let rate_limits = match state.rate_limiter.shared_status() {
        None => "local",
        Some(true) => "shared",
        Some(false) => "shared_unavailable_using_local",
    };
    let lag: serde_json::Map<String, serde_json::Value> = projections
        .iter()
        .map(|p| (p.name.clone(), json!(p.lag)))
        .collect();
    let degraded = rate_limits.starts_with("shared_unavailable");
    Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "database": {"status": "ok", "latency_ms": database_ms},
        "projections_lag": lag,
        "webhooks": {"due_deliveries": pending},
        "rate_limits": rate_limits,
        "audit": if state.audit.is_some() { "on" } else { "off" },
    }))
    .into_response()
}
