//! The test harness: `TestApp` runs the real Herald application (router, projections,
//! reconciler) in-process on a random port against its own fresh database, and offers helpers
//! that speak HTTP to it like any client would.

pub mod db;
pub mod lossy;
pub mod receiver;
pub mod scratch;
pub mod sent;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use herald_api::config::Secret;
use herald_api::state::AppState;
use herald_api::{Application, Config};
use herald_domain::api_key::KeyName;
use herald_domain::{ProjectId, Scopes};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PEPPER: &str = "test-pepper-0123456789abcdef";
/// The password test users are created with.
/// An HTTP client for the tests. reqwest is built without a TLS crypto provider of its own, so
/// the process-wide one is installed first (the server does it too, but a test may build its
/// client before any server in the process has started).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base_url: String,
    pub database_url: String,
    pub pool: PgPool,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    /// An admin key (scope `admin`, no project).
    pub admin_key: String,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The key the test servers chain the request log under (derived from `PEPPER`).
pub fn chain_key() -> herald_api::audit::ChainKey {
    herald_api::audit::ChainKey::from_pepper(PEPPER.as_bytes())
}

/// The configuration tests run with: random port, fast polling, a fixed pepper.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = Secret::new(database_url);
    config.api_key_pepper = Secret::new(PEPPER);
    config.database.max_connections = 8;
    config.projections.poll_interval_ms = 200;
    config.jobs.reconcile_interval_ms = 3_600_000; // tests step the reconciler themselves
    config.http.shutdown_grace_seconds = 5;
    // Webhook tests deliver to a receiver on 127.0.0.1, with quick retries.
    config.webhooks.allow_cidrs = vec!["127.0.0.1/32".into()];
    config.webhooks.retry_schedule = "0,1,1,1,1".into();
    config.webhooks.request_timeout_seconds = 2;
    config.webhooks.poll_interval_ms = 100;
    // Limits high enough that only the rate-limit tests (which lower them) ever meet them.
    config.rate_limits.read_per_minute = 1_000_000;
    config.rate_limits.write_per_minute = 1_000_000;
    config.rate_limits.daily_quota = 100_000_000;
    config.rate_limits.unauthenticated_per_minute = 1_000_000;
    // A loaded test machine can stall a replica's runtime past the default 250 ms; a Redis
    // decided locally would let a shared-limit test's extra request through.
    config.rate_limits.redis_timeout_ms = 2_000;
    // Each application keeps its files in a directory of its own.
    let files = std::env::temp_dir().join(format!("herald-test-files-{}", Uuid::now_v7()));
    config.storage.path = files.display().to_string();
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let database_url = db::fresh_database().await;
        let mut config = test_config(&database_url);
        adjust(&mut config);
        Self::start(config).await
    }

    /// Starts another application on an existing database (as a second replica would).
    pub async fn start(config: Config) -> Self {
        let database_url = config.database_url.expose().to_owned();
        let pool = herald_api::startup::connect(&database_url, config.database.max_connections)
            .await
            .expect("connect to the test database");
        let app = Application::build(config, pool.clone(), PEPPER.as_bytes().to_vec())
            .await
            .expect("build the application");
        let base_url = app.base_url().to_owned();
        let state = app.state();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        let mut test_app = Self {
            base_url,
            database_url,
            pool,
            state,
            client: http_client(),
            admin_key: String::new(),
            shutdown,
            server: Some(server),
        };
        test_app.admin_key = test_app.create_key(None, &["admin"]).await;
        test_app
    }

    /// Creates a key directly through the application service (as `herald keys create` does).
    pub async fn create_key(&self, project: Option<Uuid>, scopes: &[&str]) -> String {
        let key = herald_api::app::keys::NewKey::simple(
            KeyName::parse("test").unwrap(),
            project.map(ProjectId::from_uuid),
            Scopes::parse(scopes).unwrap(),
        );
        let metadata = herald_store::EventMetadata::system("test");
        herald_api::app::keys::create(&self.state.keys, PEPPER.as_bytes(), &metadata, key)
            .await
            .expect("create a key")
            .0
            .expose()
            .to_owned()
    }

    /// Creates a project over HTTP with the admin key; returns its id.
    pub async fn create_project(&self, name: &str) -> Uuid {
        let response = self
            .request(Method::POST, "/api/v1/projects", &self.admin_key)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// A project plus a key in it with the given scopes.
    pub async fn project_with_key(&self, scopes: &[&str]) -> (Uuid, String) {
        let project = self.create_project("test project").await;
        let key = self.create_key(Some(project), scopes).await;
        (project, key)
    }

    /// Creates a user directly through the application service (as `herald users create`
    /// does); returns its id.
    pub async fn create_user(&self, email: &str, password: &str, admin: bool) -> Uuid {
        use herald_domain::role::AccountRole;
        let role = if admin {
            AccountRole::Admin
        } else {
            AccountRole::Member
        };
        let email = herald_domain::user::Email::parse(email).unwrap();
        let metadata = herald_store::EventMetadata::system("test");
        herald_api::app::users::register(&self.state, &metadata, email, password.into(), role)
            .await
            .expect("create a user")
            .0
            .as_uuid()
    }

    /// Logs in over HTTP; returns the whole answer (access token, user).
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "login of {email}");
        response.json().await.unwrap()
    }

    /// `PUT /projects/{project}/members/{user}` with `role`, as the admin.
    pub async fn put_member(&self, project: Uuid, user: Uuid, role: &str) -> Response {
        self.request(
            Method::PUT,
            &format!("/api/v1/projects/{project}/members/{user}"),
            &self.admin_key,
        )
        .json(&json!({ "role": role }))
        .send()
        .await
        .unwrap()
    }

    /// A user with `role` in `project`, logged in; returns the access token.
    pub async fn member_token(&self, project: Uuid, role: &str) -> String {
        let email = format!("{role}-{}@example.com", Uuid::new_v4().simple());
        let user = self.create_user(&email, PASSWORD, false).await;
        let response = self.put_member(project, user, role).await;
        assert_eq!(response.status(), StatusCode::OK);
        self.login(&email, PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A request authenticated with `Authorization: Bearer <token>` (a user's access token).
    pub fn as_user(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-API-Key", key)
    }

    /// Holds a SHARE lock on `table` until the returned transaction ends: writes to it wait,
    /// reads do not. (SHARE, since ACCESS EXCLUSIVE would take a transaction id, which holds
    /// back the projections of every test's database while it is open.)
    pub async fn block_writes_to(&self, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut blocker = self.pool.begin().await.unwrap();
        sqlx::query(&format!("LOCK TABLE {table} IN SHARE MODE"))
            .execute(&mut *blocker)
            .await
            .unwrap();
        blocker
    }

    /// Until the server is handling at least one call (10 s at most).
    pub async fn until_a_call_is_handled(&self) {
        for _ in 0..1_000 {
            if !self.state.calls.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no call reached the server");
    }

    /// Until `at_least` backends of this app's database wait for a lock, such as one a test
    /// holds with `block_writes_to` (10 s at most).
    pub async fn until_backends_wait_on_a_lock(&self, at_least: i64) {
        for _ in 0..1_000 {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                  WHERE NOT l.granted AND a.datname = current_database()",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if waiting >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {at_least} backends waited on a lock");
    }

    pub async fn get(&self, path: &str, key: &str) -> Response {
        self.request(Method::GET, path, key).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Response {
        self.request(Method::POST, path, key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Submits a job and returns its id.
    pub async fn submit_job(&self, key: &str, body: Value) -> Uuid {
        let response = self.post("/api/v1/jobs", key, body).await;
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "{}",
            response.text().await.unwrap()
        );
        let job: Value = response.json().await.unwrap();
        job["id"].as_str().unwrap().parse().unwrap()
    }

    /// Leases a job, retrying while the jobs read model catches up with recent submissions.
    pub async fn lease(&self, key: &str, body: Value) -> Option<Value> {
        for _ in 0..100 {
            let response = self.post("/api/v1/worker/lease", key, body.clone()).await;
            match response.status() {
                StatusCode::OK => return Some(response.json().await.unwrap()),
                StatusCode::NO_CONTENT => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("lease answered {other}: {}", response.text().await.unwrap()),
            }
        }
        None
    }

    /// Waits until every projection has read the whole log.
    pub async fn wait_for_projections(&self) {
        for _ in 0..400 {
            let statuses = herald_projections::runtime::status(&self.pool)
                .await
                .unwrap();
            if statuses.len() >= self.state.projections.len() && statuses.iter().all(|s| s.lag == 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("projections did not catch up within 10 s");
    }

    /// Stops the server the way SIGTERM does and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self.remove_files();
    }

    /// Removes the application's own file directory (see `test_config`).
    fn remove_files(&self) {
        let storage = &self.state.config.storage;
        if storage.kind == herald_api::storage::StorageKind::Local && !storage.path.is_empty() {
            let _ = std::fs::remove_dir_all(&storage.path);
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // A test that ends without `stop` leaves no files behind either (once stopped, this
        // finds the directory gone).
        self.remove_files();
    }
}

/// Reads a problem+json body, checking the content type.
pub async fn problem(response: Response) -> Value {
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "expected problem+json, got {content_type}"
    );
    response.json().await.unwrap()
}

/// Number of events in the log.
pub async fn event_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Starts `herald serve` (the real binary) as its own process on `database_url` with extra
/// environment; returns it (killed when dropped) and its base URL once `/ready` answers.
pub async fn herald_serve(
    database_url: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let port = crate::api_keys::free_port();
    let mut command = tokio::process::Command::new(crate::projections::herald_binary());
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", database_url)
        .env("HERALD_API_KEY_PEPPER", PEPPER)
        .env("HERALD_LOG", "warn")
        .env("HERALD_RATE_LIMITS__REDIS_TIMEOUT_MS", "2000")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{base}/ready"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (child, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("herald serve did not come up");
}

/// The public id inside a key (`hrld_live_<id>_<secret…>`).
pub fn key_id(key: &str) -> &str {
    key.split('_').nth(2).unwrap()
}
