//! The HTTP surface: one module per resource, each a poem-openapi `OpenApi` impl with thin
//! handlers (authorize, parse into a command, one call, map the result). `service` assembles
//! them into the document served at `/openapi.json` and committed as `docs/openapi.json`.

mod admin;
mod api_keys;
mod audit;
mod audit_filters;
mod auth;
mod deliveries;
mod downloads;
mod events;
mod history;
mod job_forms;
mod job_models;
mod job_submit;
mod jobs;
mod key_input;
mod key_models;
mod listener;
mod members;
mod projects;
mod ranges;
mod streams;
pub mod system;
mod upload_models;
mod upload_steps;
mod uploads;
mod usage;
mod usage_models;
mod user_models;
pub(crate) mod webhook_models;
mod webhooks;
mod worker;

use std::sync::Arc;

use poem_openapi::{OpenApiService, Tags};

use crate::state::AppState;

#[derive(Tags)]
pub enum ApiTags {
    /// Submit jobs and follow them to their results.
    Jobs,
    /// Endpoints for worker programs (scope `jobs:work`).
    Workers,
    /// Projects, the tenancy unit, and their members.
    Projects,
    /// API keys: create, inspect, rotate, revoke.
    ApiKeys,
    /// Operating Herald (admin).
    Admin,
    /// Users: registration, login, sessions.
    Auth,
    /// Webhook endpoints, their deliveries, resends and replays.
    Webhooks,
    /// The request log: every API call, and the check of its hash chain.
    Audit,
    /// The domain event log: every change to a job, key, endpoint, project or user.
    Events,
    /// Resumable uploads of large files, used as job inputs or results.
    Uploads,
}

pub type Apis = (
    jobs::JobsApi,
    worker::WorkerApi,
    projects::ProjectsApi,
    api_keys::ApiKeysApi,
    admin::AdminApi,
    auth::AuthApi,
    members::MembersApi,
    webhooks::WebhooksApi,
    deliveries::DeliveriesApi,
    audit::AuditApi,
    events::EventsApi,
    usage::UsageApi,
    downloads::DownloadsApi,
    uploads::UploadsApi,
);

/// The OpenAPI service with every endpoint. The document names no server, so tools use the
/// origin they fetched it from, and the committed copy is identical on every machine.
pub fn service(state: Arc<AppState>) -> OpenApiService<Apis, ()> {
    let apis = (
        jobs::JobsApi {
            state: state.clone(),
        },
        worker::WorkerApi {
            state: state.clone(),
        },
        projects::ProjectsApi {
            state: state.clone(),
        },
        api_keys::ApiKeysApi {
            state: state.clone(),
        },
        admin::AdminApi {
            state: state.clone(),
        },
        auth::AuthApi {
            state: state.clone(),
        },
        members::MembersApi {
            state: state.clone(),
        },
        webhooks::WebhooksApi {
            state: state.clone(),
        },
        deliveries::DeliveriesApi {
            state: state.clone(),
        },
        audit::AuditApi {
            state: state.clone(),
        },
        events::EventsApi {
            state: state.clone(),
        },
        usage::UsageApi {
            state: state.clone(),
        },
        downloads::DownloadsApi {
            state: state.clone(),
        },
        uploads::UploadsApi { state },
    );
    OpenApiService::new(apis, "Herald API", env!("CARGO_PKG_VERSION")).description(
        "Submit asynchronous jobs, follow them to their results, and operate Herald. \
             Errors are RFC 9457 problem+json documents with a stable `code`.",
    )
}
