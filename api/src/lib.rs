//! The `herald` binary's library: configuration, the embedded database, the HTTP API (poem +
//! poem-openapi), authentication, background tasks and the command line. Business rules live in
//! `herald-domain`, read-model SQL in `herald-projections`; this crate wires them to HTTP.

pub mod app;
pub mod audit;
pub mod auth;
pub mod background;
pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod embedded_pg;
pub mod expiry;
pub mod files;
pub mod http;
pub mod limits;
pub mod reconciler;
pub mod routes;
pub mod startup;
pub mod state;
pub mod storage;
pub mod webhook_headers;
pub mod webhooks;

pub use config::Config;
pub use startup::Application;

use std::sync::Arc;

/// Every projection: the read models, then the webhook projector (which hands the deliveries
/// it records to the dispatcher through `inbox`).
pub fn all_projections(
    inbox: Arc<herald_webhooks::inbox::Inbox>,
) -> Vec<Arc<dyn herald_projections::Projection>> {
    let mut all = herald_projections::read_models();
    all.push(Arc::new(herald_webhooks::projector::WebhookProjector {
        inbox,
    }));
    all
}

/// The OpenAPI document as served at `/openapi.json` and committed as `docs/openapi.json`.
/// Needs no database: the endpoints are only described, never called.
pub fn openapi_document() -> String {
    // A lazy pool never connects, but sqlx wants a Tokio runtime to exist when it is made.
    let runtime = tokio::runtime::Handle::try_current().is_err().then(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    });
    let _entered = runtime.as_ref().map(|r| r.enter());
    routes::service(offline_state()).spec()
}

/// An application state with the default configuration that never reaches a database (its pool
/// is lazy) or stores a file anywhere but in memory: for describing the API and for tests of
/// the HTTP layer alone. Needs a Tokio runtime to be current.
pub(crate) fn offline_state() -> std::sync::Arc<state::AppState> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://unused@localhost/unused")
        .expect("a lazy pool never connects");
    std::sync::Arc::new(state::AppState::new(
        pool,
        Config::defaults(),
        Vec::new(),
        storage::Storage::in_memory(),
    ))
}
