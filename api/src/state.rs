//! Everything a request handler needs, built once at start and shared.

use std::sync::Arc;
use std::time::Duration;

use herald_domain::api_key::ApiKey;
use herald_domain::job::Job;
use herald_domain::project::Project;
use herald_domain::user::User;
use herald_domain::webhook_endpoint::WebhookEndpoint;
use herald_domain::Scope;
use herald_projections::Projection;
use herald_store::{AggregateStore, Announcer, Appender, Coalescer, EventMetadata};
use herald_webhooks::dispatcher::lease_for;
use herald_webhooks::guard::AddressPolicy;
use herald_webhooks::inbox::Inbox;
use herald_webhooks::sender::Sender;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::auth::login_limit::LoginLimiter;
use crate::auth::{Caller, Credentials, KeyVerifier, Presented, Refusal, UserDirectory};
use crate::config::Config;
use crate::http::context::{current_client_ip, current_csrf, RequestContext};
use crate::http::problem::ApiError;
use crate::limits::{RateHeaders, RateLimiter};

pub struct AppState {
    pub pool: PgPool,
    /// The API calls being handled, each in a task of its own (`http::context`): shutdown
    /// waits for them, a call whose client has left included.
    pub calls: tokio_util::task::TaskTracker,
    pub config: Config,
    /// Wakes this process's projection runners (by projection name) and announces appends to
    /// the other replicas, coalesced.
    pub wakeups: Vec<(&'static str, Arc<Notify>)>,
    /// Bumped whenever the log may have grown; event streams wait on it.
    pub stream_wake: tokio::sync::watch::Sender<u64>,
    pub announcer: Arc<Coalescer>,
    pub jobs: AggregateStore<Job>,
    pub projects: AggregateStore<Project>,
    pub keys: AggregateStore<ApiKey>,
    pub users: AggregateStore<User>,
    pub webhook_endpoints: AggregateStore<WebhookEndpoint>,
    /// Every projection this process runs: the read models and the webhook projector.
    pub projections: Vec<Arc<dyn Projection>>,
    /// This process's webhook dispatcher's inbox: deliveries handed over by the projector, and
    /// its wake-up.
    pub dispatcher_inbox: Arc<Inbox>,
    pub webhook_sender: Arc<Sender>,
    /// Seals and opens webhook endpoints' header values (`herald_webhooks::header_seal`).
    pub header_seal: herald_webhooks::header_seal::HeaderSeal,
    /// Seals and opens the answers kept for an `Idempotency-Key` (`http::idempotency`).
    pub answer_seal: crate::http::idempotency::AnswerSeal,
    pub verifier: Arc<KeyVerifier>,
    pub users_directory: Arc<UserDirectory>,
    pub login_limiter: LoginLimiter,
    pub rate_limiter: Arc<RateLimiter>,
    /// The request log writer (`None` when the audit trail is turned off).
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// The key the request log is chained under, derived from the pepper (`audit::key`).
    pub chain_key: crate::audit::ChainKey,
    /// Where uploaded and result files are kept.
    pub storage: crate::storage::Storage,
}

/// The name of the wake-up that event streams follow.
pub const STREAMS: &str = "event streams";

impl AppState {
    pub fn new(
        pool: PgPool,
        config: Config,
        pepper: Vec<u8>,
        storage: crate::storage::Storage,
    ) -> Self {
        let timeout = Duration::from_secs(config.webhooks.request_timeout_seconds);
        let dispatcher_inbox = Arc::new(Inbox::new(lease_for(timeout)));
        let projections = crate::all_projections(dispatcher_inbox.clone());
        let mut wakeups: Vec<(&'static str, Arc<Notify>)> = projections
            .iter()
            .map(|p| (p.name(), Arc::new(Notify::new())))
            .collect();
        // Event streams are woken like the projections, through the `STREAMS` wake-up.
        wakeups.push((STREAMS, Arc::new(Notify::new())));
        let coalescer = Arc::new(Coalescer::new(
            wakeups.iter().map(|(_, w)| w.clone()).collect(),
        ));
        let announcer = Announcer::Coalesced(coalescer.clone());
        let rate_limiter = Arc::new(RateLimiter::new(
            config.rate_limits.clone(),
            config.redis_url.expose(),
        ));
        let login_limiter = LoginLimiter::new(
            config.auth.login_attempts,
            Duration::from_secs(config.auth.login_window_seconds.into()),
        )
        .shared_through(rate_limiter.shared());
        // With the audit trail on, its writer appends the events too (one commit for both logs).
        let chain_key = crate::audit::ChainKey::from_pepper(&pepper);
        let header_seal = herald_webhooks::header_seal::HeaderSeal::from_pepper(&pepper);
        let (appender, audit) = if config.audit.enabled {
            let (appender, events) = Appender::detached();
            let audit =
                crate::audit::AuditLog::start(pool.clone(), chain_key.clone(), Some(events));
            (appender, Some(audit))
        } else {
            (Appender::start(pool.clone()), None)
        };
        let appender = Some(appender);
        let (a, p) = (&announcer, &pool);
        Self {
            calls: tokio_util::task::TaskTracker::new(),
            jobs: AggregateStore::with_parts(p.clone(), a.clone(), appender.clone()),
            projects: AggregateStore::with_parts(p.clone(), a.clone(), appender.clone()),
            keys: AggregateStore::with_parts(p.clone(), a.clone(), appender.clone()),
            users: AggregateStore::with_parts(p.clone(), a.clone(), appender.clone()),
            webhook_endpoints: AggregateStore::with_parts(p.clone(), a.clone(), appender),
            projections,
            dispatcher_inbox,
            webhook_sender: Arc::new(webhook_sender(&config, header_seal.clone())),
            header_seal,
            answer_seal: crate::http::idempotency::AnswerSeal::from_pepper(&pepper),
            wakeups,
            stream_wake: tokio::sync::watch::Sender::new(0),
            announcer: coalescer,
            users_directory: Arc::new(UserDirectory::new(pool.clone(), &pepper)),
            verifier: Arc::new(KeyVerifier::new(pool.clone(), pepper)),
            login_limiter,
            rate_limiter,
            audit,
            chain_key,
            storage,
            pool,
            config,
        }
    }

    /// Verifies the credentials from the request's client address: 401 if bad (one answer for
    /// every reason), 403 if a key is used outside its IP allowlist or a cookie session sends a
    /// state-changing request without its CSRF token.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Caller, ApiError> {
        match self.identify(credentials).await {
            Ok(caller) => {
                if let crate::auth::Principal::Key(id) = &caller.principal {
                    self.verifier.count_use(id);
                }
                caller.note_as_actor();
                self.spend(&caller).await?;
                Ok(caller)
            }
            Err(refusal) => Err(self.refused(refusal).await),
        }
    }

    /// The answer to credentials `identify` refused, spent from the client IP's budget (a 429
    /// instead once over it).
    pub(crate) async fn refused(&self, refusal: ApiError) -> ApiError {
        match refusal {
            ApiError::Unauthenticated => self.refuse_unauthenticated().await,
            // Refused before the caller is admitted (outside a key's IP allowlist, no CSRF
            // token; the record names it): spent from the client IP's budget like bad
            // credentials, never from the caller's.
            other => self.spend_anonymous().await.err().unwrap_or(other),
        }
    }

    /// Counts an authenticated request against its caller's limits (429 when over).
    async fn spend(&self, caller: &Caller) -> Result<(), ApiError> {
        if !self.rate_limiter.enabled() {
            return Ok(());
        }
        let (write, _) = current_csrf();
        let subject = caller.rate_subject();
        let applied = self
            .rate_limiter
            .check(&self.pool, &subject, write, caller.limits)
            .await;
        let headers = RateHeaders {
            applied,
            policies: self.rate_limiter.policies(caller.limits),
        };
        let refusal = too_many(&headers);
        crate::http::context::set_rate_headers(headers);
        refusal.map_or(Ok(()), Err)
    }

    /// A 401, or a 429 once the client IP has sent too many requests with bad credentials.
    /// Refused credentials never spend the budget of the key they name.
    pub(crate) async fn refuse_unauthenticated(&self) -> ApiError {
        if !self.rate_limiter.enabled() {
            return ApiError::Unauthenticated;
        }
        let subject = crate::limits::client::ip_subject(
            current_client_ip(),
            self.config.rate_limits.ipv6_prefix,
        );
        let applied = self.rate_limiter.check_unauthenticated(&subject).await;
        if applied.allowed {
            return ApiError::Unauthenticated;
        }
        let headers = RateHeaders {
            applied: vec![applied],
            ..RateHeaders::default()
        };
        let refusal = too_many(&headers).unwrap_or(ApiError::Unauthenticated);
        crate::http::context::set_rate_headers(headers);
        refusal
    }

    /// Who the credentials name, checked from the request's client address, without counting
    /// anything (no key use, no rate limit).
    pub(crate) async fn identify(&self, credentials: &Credentials) -> Result<Caller, ApiError> {
        match credentials.presented() {
            Presented::Key(key) => self
                .verifier
                .verify(key, current_client_ip())
                .await
                .map_err(|refusal| match refusal {
                    Refusal::Unauthenticated => ApiError::Unauthenticated,
                    Refusal::IpNotAllowed(caller) => {
                        caller.note_as_actor();
                        ApiError::Forbidden("this key may not be used from this IP address".into())
                    }
                }),
            Presented::Token(token) => self
                .users_directory
                .verify(token)
                .await
                .ok_or(ApiError::Unauthenticated),
            Presented::Cookie(token) => {
                let caller = self
                    .users_directory
                    .verify(token)
                    .await
                    .ok_or(ApiError::Unauthenticated)?;
                let (state_changing, csrf) = current_csrf();
                let (_, session) = caller.user().expect("a session token names a user");
                let keys = &self.users_directory.keys;
                if state_changing && !csrf.is_some_and(|t| keys.csrf_matches(session, &t)) {
                    // Recorded as the session's user (a forged request from a victim's
                    // browser is found under the victim), granted and spent nothing.
                    caller.note_as_actor();
                    return Err(ApiError::CsrfRequired);
                }
                Ok(caller)
            }
        }
    }

    /// Verifies the credentials (401 if bad) and the scope (403 if missing).
    pub async fn authorize(
        &self,
        credentials: &Credentials,
        scope: Scope,
    ) -> Result<Caller, ApiError> {
        let mut caller = self.authenticate(credentials).await?;
        caller.require(scope)?;
        Ok(caller)
    }

    /// Like `authorize`, for endpoints either of two scopes may use (the first one's refusal
    /// is the answer when neither is held).
    pub async fn authorize_either(
        &self,
        credentials: &Credentials,
        first: Scope,
        second: Scope,
    ) -> Result<Caller, ApiError> {
        let mut caller = self.authenticate(credentials).await?;
        match caller.require(first) {
            Ok(()) => Ok(caller),
            Err(refusal) => caller.require(second).map(|()| caller).map_err(|_| refusal),
        }
    }
}

/// The 429 for a request some policy refused, if any did.
fn too_many(headers: &RateHeaders) -> Option<ApiError> {
    let violated = headers.violated();
    if violated.is_empty() {
        return None;
    }
    let retry = headers.binding().map_or(1, |b| b.reset_seconds().max(1));
    Some(ApiError::TooManyRequests {
        detail: format!("rate limit exceeded: {}", violated.join(", ")),
        retry_after_seconds: retry,
        violated,
    })
}

/// The HTTP client webhooks go out through, guarded by the configured address policy.
/// It opens endpoints' header values with `seal`.
fn webhook_sender(config: &Config, seal: herald_webhooks::header_seal::HeaderSeal) -> Sender {
    let policy = AddressPolicy {
        allow: config.webhooks.allow_nets().unwrap_or_default(),
        https_only: config.webhooks.https_only,
    };
    let timeout = Duration::from_secs(config.webhooks.request_timeout_seconds);
    let ca_pem = (config.webhooks.ca_pem())
        .expect("webhooks.ca_file is checked when the configuration loads");
    Sender::new(policy, timeout, ca_pem.as_deref(), seal).expect("the webhook HTTP client builds")
}

/// Event metadata for a command issued by `caller` during the request in `context`.
pub fn metadata(caller: &Caller, context: &RequestContext) -> EventMetadata {
    EventMetadata {
        actor: caller.actor(),
        request_id: Some(context.request_id.clone()),
        ip: context.ip.clone(),
        user_agent: context.user_agent.clone(),
    }
}
