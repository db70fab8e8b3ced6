//! Everything a request handler needs, built once at start and shared.

use std::sync::Arc;

use herald_domain::api_key::ApiKey;
use herald_domain::job::Job;
use herald_domain::project::Project;
use herald_store::{AggregateStore, Announcer, Coalescer, EventMetadata};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::{Caller, Credentials, KeyVerifier, Refusal};
use crate::config::Config;
use crate::http::context::RequestContext;
use crate::http::problem::ApiError;
use herald_domain::Scope;
use herald_store::Actor;

pub struct AppState {
    pub pool: PgPool,
    pub config: Config,
    /// Wakes this process's projection runners (by projection name) and announces appends to
    /// the other replicas, coalesced.
    pub wakeups: Vec<(&'static str, Arc<Notify>)>,
    pub announcer: Arc<Coalescer>,
    pub jobs: AggregateStore<Job>,
    pub projects: AggregateStore<Project>,
    pub keys: AggregateStore<ApiKey>,
    pub verifier: Arc<KeyVerifier>,
}

impl AppState {
    pub fn new(pool: PgPool, config: Config, pepper: Vec<u8>) -> Self {
        let wakeups: Vec<(&'static str, Arc<Notify>)> = herald_projections::read_models()
            .iter()
            .map(|p| (p.name(), Arc::new(Notify::new())))
            .collect();
        let coalescer = Arc::new(Coalescer::new(
            wakeups.iter().map(|(_, w)| w.clone()).collect(),
        ));
        let announcer = Announcer::Coalesced(coalescer.clone());
        Self {
            jobs: AggregateStore::with_announcer(pool.clone(), announcer.clone()),
            projects: AggregateStore::with_announcer(pool.clone(), announcer.clone()),
            keys: AggregateStore::with_announcer(pool.clone(), announcer),
            wakeups,
            announcer: coalescer,
            verifier: Arc::new(KeyVerifier::new(pool.clone(), pepper)),
            pool,
            config,
        }
    }

    /// Verifies the credentials (401 if bad).
    /// Verifies the credentials from the request's client address: 401 if bad, 403 if the
    /// address is outside the key's allowlist.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Caller, ApiError> {
        let client = crate::http::context::current_client_ip();
        self.verifier
            .verify(credentials.presented(), client)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Unauthenticated => ApiError::Unauthenticated,
                Refusal::IpNotAllowed => {
                    ApiError::Forbidden("this key may not be used from this IP address".into())
                }
            })
    }

    /// Verifies the credentials (401 if bad) and the scope (403 if missing).
    pub async fn authorize(
        &self,
        credentials: &Credentials,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(credentials).await?;
        caller.require(scope)?;
        Ok(caller)
    }
}

/// Event metadata for a command issued by `caller` during the request in `context`.
pub fn metadata(caller: &Caller, context: &RequestContext) -> EventMetadata {
    EventMetadata {
        actor: Actor::ApiKey(caller.key_id.to_string()),
        request_id: Some(context.request_id.clone()),
        ip: context.ip.clone(),
        user_agent: context.user_agent.clone(),
    }
}
