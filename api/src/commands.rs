//! Running each `herald` subcommand.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use herald_domain::api_key::KeyName;
use herald_domain::project::ProjectName;
use herald_domain::{ProjectId, Scopes};
use herald_store::EventMetadata;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    AuditCommand, Cli, Command, KeyCreateArgs, KeysCommand, ProjectionsCommand, ProjectsCommand,
    UsersCommand,
};
use crate::config::Config;
use crate::database::Database;
use crate::startup::{pepper, Application};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    init_logging(&config);
    match cli.command {
        Command::Openapi => {
            println!("{}", crate::openapi_document());
            Ok(())
        }
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            serve(config).await
        }
        command => {
            // The chain key comes from the servers' pepper (a new one would fail every record):
            // read once, before anything touches the database.
            let chain_key = match command {
                Command::Audit(AuditCommand::Verify { .. }) => {
                    let pepper = crate::startup::existing_pepper(&config)?.context(
                        "verifying needs the servers' pepper (HERALD_API_KEY_PEPPER, or the \
                         api-key-pepper file of their data directory, HERALD_DATA_DIR)",
                    )?;
                    Some(crate::audit::ChainKey::from_pepper(&pepper))
                }
                _ => None,
            };
            let database = Database::open(&config).await?;
            let outcome = run_with_database(&config, &database, command, chain_key).await;
            database.close().await?;
            outcome
        }
    }
}

fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    // sqlx reports every "already exists, skipping" notice of the migrator at info.
    let directives = format!("{},sqlx::postgres::notice=warn", config.log);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let pepper = pepper(&config)?;
    let database = Database::open(&config).await?;
    let key = crate::audit::ChainKey::from_pepper(&pepper);
    if let Some(seq) = crate::audit::newest_under_other_key(&database.pool, &key).await? {
        tracing::error!(
            seq,
            "the request log's newest record (or retention's anchor) does not match its hash \
             (or seal) under this server's pepper: either HERALD_API_KEY_PEPPER (or the data directory's api-key-pepper) is \
             not the one the servers that wrote the log use, and API keys created under theirs \
             will not verify either, or the record was edited; `herald audit verify` checks \
             the whole log"
        );
    }
    let app = Application::build(config, database.pool.clone(), pepper).await?;
    let url = app.base_url().to_owned();
    tracing::info!("Herald is listening on {url}");
    eprintln!("Herald is listening on {url}\n  API docs: {url}/docs  (Redoc: {url}/redoc, OpenAPI: {url}/openapi.json)");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let served = app.run(shutdown).await;
    database.close().await?;
    served
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
    shutdown.cancel();
}

/// `chain_key`: the request log's, read from the pepper before the database was opened (for
/// `audit verify` only).
async fn run_with_database(
    config: &Config,
    database: &Database,
    command: Command,
    chain_key: Option<crate::audit::ChainKey>,
) -> anyhow::Result<()> {
    let pool = &database.pool;
    let metadata = EventMetadata::system("cli");
    match command {
        Command::Migrate => {
            eprintln!("migrations are up to date");
            Ok(())
        }
        Command::Projects(ProjectsCommand::Create { name }) => {
            let name = ProjectName::parse(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let store = herald_store::AggregateStore::new(pool.clone());
            let (id, _) = crate::app::projects::create(&store, &metadata, name)
                .await
                .context("creating the project")?;
            println!("{id}");
            Ok(())
        }
        Command::Keys(KeysCommand::Create(args)) => create_key(config, pool, &metadata, args).await,
        Command::Audit(AuditCommand::Verify { from, to, witness }) => {
            // As the route answers 400: a range no record can lie in checks nothing.
            if let (Some(from), Some(to)) = (from, to) {
                anyhow::ensure!(from <= to, "--from ({from}) must not be after --to ({to})");
            }
            let key = chain_key.context("read in `run`")?;
            let verified =
                crate::audit::verify_with(pool, &key, from, to, witness.as_ref()).await?;
            let checked = verified.checked;
            match verified.broken {
                None => {
                    println!("ok: {checked} records, the chain is intact");
                    if let Some(last) = verified.last {
                        println!("last: {}:{}", last.seq, last.hash);
                    }
                    Ok(())
                }
                Some((seq, reason)) => {
                    println!(
                        "broken at record {seq}: {reason} ({checked} records intact before it)"
                    );
                    anyhow::bail!("the request log's hash chain is broken at record {seq}")
                }
            }
        }
        Command::Users(UsersCommand::Create {
            email,
            admin,
            password_stdin,
        }) => create_user(config, pool, &metadata, &email, admin, password_stdin).await,
        Command::Projections(ProjectionsCommand::List) => {
            for status in herald_projections::runtime::status(pool).await? {
                println!(
                    "{:<12} position {:>10}  lag {:>8}  applied {:>10}",
                    status.name, status.global_position, status.lag, status.events_applied
                );
            }
            Ok(())
        }
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            rebuild(config, pool, &name).await
        }
        Command::Serve { .. } | Command::Openapi => unreachable!("handled without a database"),
    }
}

async fn create_key(
    config: &Config,
    pool: &sqlx::PgPool,
    metadata: &EventMetadata,
    args: KeyCreateArgs,
) -> anyhow::Result<()> {
    let scopes = Scopes::parse(&args.scopes).map_err(|e| anyhow::anyhow!(e))?;
    let project_id = args.project.map(ProjectId::from_uuid);
    if let Some(project) = project_id {
        let store =
            herald_store::AggregateStore::<herald_domain::project::Project>::new(pool.clone());
        let (found, _) = store.load(&project.to_string()).await?;
        anyhow::ensure!(found.state().is_some(), "no project with id {project}");
    } else if !scopes.allows(herald_domain::Scope::Admin) {
        anyhow::bail!("--project is required unless the key has the `admin` scope");
    }
    let name = KeyName::parse(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut key = crate::app::keys::NewKey::simple(name, project_id, scopes);
    key.expires_at = args
        .expires_in_days
        .map(|days| Utc::now() + chrono::Duration::days(i64::from(days)));
    let store = herald_store::AggregateStore::new(pool.clone());
    let (token, _) = crate::app::keys::create(&store, &pepper(config)?, metadata, key)
        .await
        .context("creating the key")?;
    println!("{}", token.expose());
    Ok(())
}

async fn create_user(
    config: &Config,
    pool: &sqlx::PgPool,
    metadata: &EventMetadata,
    email: &str,
    admin: bool,
    password_stdin: bool,
) -> anyhow::Result<()> {
    use herald_domain::role::AccountRole;
    use rand::distributions::{Alphanumeric, DistString};
    let email = herald_domain::user::Email::parse(email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    };
    let role = if admin {
        AccountRole::Admin
    } else {
        AccountRole::Member
    };
    let storage = config.storage.open(&config.data_dir)?;
    let state = crate::state::AppState::new(pool.clone(), config.clone(), pepper(config)?, storage);
    let (id, _) = crate::app::users::register(&state, metadata, email, password.clone(), role)
        .await
        .map_err(|e| anyhow::anyhow!("creating the user: {e}"))?;
    if password_stdin {
        println!("{id}");
    } else {
        eprintln!("user {id} created; its one-time password follows (shown once):");
        println!("{password}");
    }
    Ok(())
}

/// Resets the projection, then replays it here if no server holds it, or waits for the server
/// that does to catch up.
async fn rebuild(config: &Config, pool: &sqlx::PgPool, name: &str) -> anyhow::Result<()> {
    let projection = crate::all_projections(Default::default())
        .into_iter()
        .find(|p| p.name() == name)
        .with_context(|| format!("no projection named `{name}`"))?;
    herald_projections::runtime::rebuild(pool, projection.as_ref()).await?;
    let poll = Duration::from_millis(config.projections.poll_interval_ms);
    let runner = herald_projections::ProjectionRunner::new(
        pool.clone(),
        projection,
        Default::default(),
        poll,
    );
    if let Some(mut conn) = runner.try_lock().await? {
        let replayed = runner
            .catch_up(&mut conn, &CancellationToken::new())
            .await?
            .read;
        eprintln!("rebuilt {name} from {replayed} events");
        return Ok(());
    }
    eprintln!("a running server holds {name}; waiting for it to replay the log");
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{name} is still replaying after 10 minutes; follow it with `herald projections list`"
        );
        let status = herald_projections::runtime::status(pool).await?;
        if status.iter().any(|s| s.name == name && s.lag == 0) {
            eprintln!("rebuilt {name}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
