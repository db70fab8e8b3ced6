//! Building and running the server. `connect` opens the database (the configured URL, or the
//! embedded cluster) and applies migrations; `Application::build` binds the listener (port 0
//! works, for tests) and assembles routes; `run` serves until the shutdown token fires, then
//! stops accepting, lets in-flight requests finish, and stops the background tasks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::http::Method;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::Cors;
use poem::{get, EndpointExt, Route, Server};
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::context::Edge;
use crate::http::route_templates::RouteTemplates;
use crate::routes;
use crate::state::AppState;

/// Opens a pool on `url` and brings the schema up to date.
/// Its connections are named `herald` in `pg_stat_activity` unless the URL names them.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let mut options: PgConnectOptions = url.parse().context("reading the database URL")?;
    if options.get_application_name().is_none() {
        options = options.application_name("herald");
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx would otherwise ping every connection it hands out: one more round trip per
        // query. A connection that broke while idle fails its query instead, and is dropped.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    herald_store::MIGRATOR
        .run(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

/// The configured pepper, or the one generated on first start and kept in the data directory.
pub fn pepper(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(existing) = existing_pepper(config)? {
        return Ok(existing);
    }
    let path = config.data_dir.join(PEPPER_FILE);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if !write_once(&path, &value)? {
        // Another process started at the same moment and wrote its own first: use that one.
        return existing_pepper(config)?
            .with_context(|| format!("{} exists but cannot be read", path.display()));
    }
    tracing::info!(path = %path.display(), "generated a new API-key pepper");
    Ok(value.into_bytes())
}

/// The file in the data directory the generated pepper is kept in.
const PEPPER_FILE: &str = "api-key-pepper";

/// The configured pepper, or the one kept in the data directory, without generating one:
/// what commands that read the servers' data with their keys (`herald audit verify`) use. A
/// kept pepper shorter than a configured one may be (16 characters) is refused: an empty or
/// cut file would otherwise hash keys and chain the request log under a key anyone can guess.
pub fn existing_pepper(config: &Config) -> anyhow::Result<Option<Vec<u8>>> {
    if !config.api_key_pepper.is_empty() {
        return Ok(Some(config.api_key_pepper.expose().as_bytes().to_vec()));
    }
    let path = config.data_dir.join(PEPPER_FILE);
    let existing = match std::fs::read_to_string(&path) {
        Ok(existing) => existing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Unreadable (a directory, not text, no permission): not a pepper to make up anew.
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let existing = existing.trim();
    anyhow::ensure!(
        existing.chars().count() >= 16,
        "{} holds {} characters, fewer than a pepper's 16 (an empty or cut file): restore it \
         from a backup, or set HERALD_API_KEY_PEPPER to the servers' pepper",
        path.display(),
        existing.chars().count()
    );
    Ok(Some(existing.as_bytes().to_vec()))
}

/// Writes `value` to `path` whole or not at all, readable by the owner only: into a file of
/// its own, flushed to disk, then linked to `path`, so a crash never leaves `path` empty or
/// cut. False when `path` already exists (nothing is changed then).
fn write_once(path: &Path, value: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A name of its own, not the process id: in containers every first process is 1.
    let staged = path.with_extension(format!("new-{:016x}", rand::random::<u64>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("writing {}", staged.display()))?;
    file.write_all(value.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&staged, path);
    std::fs::remove_file(&staged)?;
    match linked {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error).with_context(|| format!("writing {}", path.display())),
    }
}

pub struct Application {
    acceptor: TcpAcceptor,
    state: Arc<AppState>,
    base_url: String,
}

impl Application {
    pub async fn build(config: Config, pool: PgPool, pepper: Vec<u8>) -> anyhow::Result<Self> {
        let acceptor = TcpListener::bind(config.listen)
            .into_acceptor()
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .context("the listener has no address")?;
        let base_url = format!("http://{addr}");
        let storage = config.storage.open(&config.data_dir)?;
        tracing::info!(storage = %storage.description, "file storage");
        let state = Arc::new(AppState::new(pool, config, pepper, storage));
        crate::webhook_headers::seal_stored(&state.pool, &state.header_seal, &state.chain_key)
            .await
            .context("sealing webhook header values stored in plain text")?;
        crate::auth::passwords::prepare().await;
        Ok(Self {
            acceptor,
            state,
            base_url,
        })
    }

    /// `http://host:port` of the bound listener.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` fires, then drains and stops everything it started.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let background = CancellationToken::new();
        crate::background::spawn(&self.state, &tracker, &background);
        tracker.close();

        let http = &self.state.config.http;
        let grace = Duration::from_secs(http.shutdown_grace_seconds);
        let app = routes_for(&self.state);
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown.cancelled_owned(), Some(grace))
            .await;
        // Calls whose clients left before their answer are still being handled and recorded.
        self.state.calls.close();
        self.state.calls.wait().await;
        tracing::info!("HTTP server stopped; stopping background tasks");
        background.cancel();
        tracker.wait().await;
        served.context("serving HTTP")
    }
}

/// The routes outside the OpenAPI document that answer GET only.
const SYSTEM_ROUTES: [&str; 5] = [
    "/openapi.json",
    "/health",
    "/live",
    "/ready",
    "/health/detailed",
];

/// The whole HTTP application: versioned API, documents, system endpoints, edge middleware.
pub fn routes_for(state: &Arc<AppState>) -> impl poem::Endpoint + 'static {
    let http = &state.config.http;
    let api = routes::service(state.clone());
    let edge = Edge {
        max_body_bytes: http.max_body_bytes,
        timeout: Duration::from_secs(http.request_timeout_seconds),
        streamed: crate::http::streamed_body::StreamedLimits {
            chunk_bytes: state.config.uploads.max_chunk_bytes,
            multipart_bytes: state.config.uploads.max_multipart_bytes,
            timeout: Duration::from_secs(state.config.uploads.request_timeout_seconds),
        },
        trusted_proxies: state.config.trusted_proxy_nets().unwrap_or_default(),
        audit: state.audit.clone(),
        state: state.clone(),
        routes: Arc::new(RouteTemplates::from_openapi(&api.spec()).and_get_only(&SYSTEM_ROUTES)),
    };
    // Explicit origins only: poem's `Cors::new()` alone would allow every origin.
    let origins = &state.config.cors_allowed_origins;
    let cors = (!origins.is_empty()).then(|| {
        Cors::new()
            .allow_origins(origins.iter().map(String::as_str))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                "content-type",
                "x-api-key",
                "authorization",
                "x-request-id",
                "x-csrf-token",
                "idempotency-key",
            ])
            .expose_headers([
                "x-request-id",
                "location",
                "retry-after",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "ratelimit-policy",
                "ratelimit",
            ])
            .max_age(600)
    });
    // The system routes answer GET (and so HEAD) only; the edge's 405 names them (`SYSTEM_ROUTES`).
    Route::new()
        .at("/openapi.json", get(api.spec_endpoint()))
        .nest("/docs", api.swagger_ui())
        .nest("/redoc", api.redoc())
        .at("/health", get(routes::system::live))
        .at("/live", get(routes::system::live))
        .at("/ready", get(routes::system::ready.data(state.clone())))
        .at(
            "/health/detailed",
            get(routes::system::detailed.data(state.clone())),
        )
        .nest("/", api)
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .with(crate::http::idempotency::Idempotency {
            state: state.clone(),
            timeout: edge.timeout,
            streamed: edge.streamed.clone(),
        })
        .with(edge)
}
