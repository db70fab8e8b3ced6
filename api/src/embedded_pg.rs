//! The private PostgreSQL cluster that `herald serve` runs when DATABASE_URL is not set.
//!
//! This module owns `<data_dir>/postgres/`: the cluster in `data/` (made by `initdb` on first
//! use, kept across restarts), its log `postgres.log`, the lock `herald.lock` that keeps a second
//! herald process off the cluster, and the unix socket directory `run/` (or `/tmp/herald-pg-<hash>`
//! when the socket path would pass the 107-byte limit). It uses the machine's PostgreSQL binaries
//! and never listens on TCP. PostgreSQL refuses to run as root, so under root the cluster runs as
//! the `postgres` system user (`herald-pg`, created if missing, when there is none) via `setpriv`,
//! with the ambient capability CAP_DAC_READ_SEARCH when that user cannot traverse the parents of
//! the data directory (a checkout in a 0700 `mktemp -d`): see docs/adr/0001-embedded-postgres.md.

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, Uid, User};
use std::fs::{self, DirBuilder, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use tracing::{info, warn};

const SOCKET: &str = ".s.PGSQL.5432";

/// A running private PostgreSQL cluster; [`EmbeddedPostgres::stop`] shuts it down.
pub struct EmbeddedPostgres {
    bin: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    runner: Runner,
    running: bool,
    _lock: Flock<File>,
}

/// Runs PostgreSQL programs as the cluster user.
struct Runner {
    user: User,
    pgdata: PathBuf,
    /// We are root: switch to `user` with setpriv.
    switch: bool,
    /// Ambient capability given to the cluster processes when `user` cannot reach the data dir.
    cap: Option<&'static str>,
}

impl EmbeddedPostgres {
    /// Locates the binaries, runs initdb on first use, starts the cluster and waits until it accepts connections.
    /// Creates database `herald` (owner = the cluster superuser) if missing.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = fs::canonicalize(data_dir)?;
        let cluster = data_dir.join("postgres");
        let pgdata = cluster.join("data");
        let bin = find_bindir(&pgdata)?;
        let runner = Runner::new(&data_dir, &cluster).await?;
        private_dir(&cluster, &runner.user)?;
        let lock_file = cluster.join("herald.lock");
        let lock = Flock::lock(File::create(&lock_file)?, FlockArg::LockExclusiveNonblock)
            .map_err(|_| anyhow!("the PostgreSQL cluster in {} is in use by another herald process ({} is locked): stop that process or use another data directory", cluster.display(), lock_file.display()))?;
        let socket_dir = socket_dir(&cluster, &runner.user)?;
        let (running, _lock) = (false, lock);
        let mut pg = Self {
            bin,
            pgdata,
            socket_dir,
            runner,
            running,
            _lock,
        };
        let (dir, user) = (pg.pgdata.display().to_string(), pg.runner.user.name.clone());

        if let Some(pid) = pg.orphan_postmaster() {
            warn!("stopping PostgreSQL (pid {pid}) left running on {dir} by a killed herald");
            run(pg.stop_command(), "pg_ctl stop").await?;
        } else if pg.pgdata.join("postmaster.pid").exists() {
            warn!("removing the stale postmaster.pid in {dir} (its server is gone)");
            fs::remove_file(pg.pgdata.join("postmaster.pid"))?;
            let _ = fs::remove_file(pg.socket_dir.join(format!("{SOCKET}.lock")));
        }
        if !pg.pgdata.join("PG_VERSION").exists() {
            let bin = pg.bin.display();
            info!("initialising a new PostgreSQL cluster in {dir} (superuser {user}, {bin})");
            if pg.pgdata.exists() {
                warn!("removing {dir}: an interrupted initdb left it incomplete");
                fs::remove_dir_all(&pg.pgdata)?;
            }
            let mut initdb = pg.runner.command(&pg.bin.join("initdb"));
            let flags = "--auth=trust --encoding=UTF8 --no-locale".split(' ');
            initdb.args(["-U", &user]).args(flags);
            run(initdb, "initdb").await?;
            let conf = pg.pgdata.join("postgresql.conf");
            let text = fs::read_to_string(&conf)? + "\n# herald:\ninclude = 'herald.conf'\n";
            fs::write(&conf, text)?;
        }
        pg.write_config()?;

        let socket = pg.socket_dir.display().to_string();
        info!("starting PostgreSQL in {dir}, socket in {socket}");
        let log = cluster.join("postgres.log");
        let mut start = pg.runner.command(&pg.bin.join("pg_ctl"));
        start.args("start -w -t 120 -s -l".split(' ')).arg(&log);
        if let Err(e) = run(start, "pg_ctl start").await {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            bail!("{e:#}\nlast lines of {}:\n{tail}", log.display());
        }
        pg.running = true;

        let sql = "SELECT 1 FROM pg_database WHERE datname = 'herald'";
        if pg.psql(sql).await?.trim() != "1" {
            info!("creating database herald (owner {user})");
            let sql = format!("CREATE DATABASE herald OWNER {}", quote(&user));
            pg.psql(&sql).await?;
        }
        info!("PostgreSQL is ready: {}", pg.database_url());
        // Lets other herald commands (`herald keys create`, ...) reach the running cluster.
        fs::write(cluster.join("url"), pg.database_url())?;
        Ok(pg)
    }

    /// The URL of the cluster under `data_dir` when another herald process is running it (it
    /// holds the lock), so commands can use it instead of starting their own.
    pub fn running_url(data_dir: &Path) -> Option<String> {
        let cluster = fs::canonicalize(data_dir).ok()?.join("postgres");
        let lock = File::open(cluster.join("herald.lock")).ok()?;
        if Flock::lock(lock, FlockArg::LockSharedNonblock).is_ok() {
            return None; // nobody holds it: the cluster is not running
        }
        fs::read_to_string(cluster.join("url")).ok()
    }

    /// A sqlx/libpq URL connecting over the unix socket to database `herald`, e.g. postgres://USER@/herald?host=/path/to/socketdir
    pub fn database_url(&self) -> String {
        // Not `postgres://USER@/herald`: the `url` crate (so sqlx) rejects a user with an empty host.
        let host = encode(self.socket_dir.as_os_str().as_bytes());
        let user = encode(self.runner.user.name.as_bytes());
        format!("postgres:///herald?host={host}&port=5432&user={user}")
    }

    /// Fast shutdown (pg_ctl stop -m fast), waits for it.
    pub async fn stop(mut self) -> Result<()> {
        info!("stopping PostgreSQL in {}", self.pgdata.display());
        run(self.stop_command(), "pg_ctl stop").await?;
        self.running = false;
        Ok(())
    }

    fn stop_command(&self) -> Command {
        let mut cmd = self.runner.command(&self.bin.join("pg_ctl"));
        cmd.args("stop -m fast -w -t 120 -s".split(' '));
        cmd
    }

    /// Runs SQL as the superuser, from this process (root may enter the private socket dir).
    async fn psql(&self, sql: &str) -> Result<String> {
        let mut cmd = clean_env(Command::new(self.bin.join("psql")));
        let (user, host) = (&self.runner.user.name, &self.socket_dir);
        cmd.args("-X -q -A -t -v ON_ERROR_STOP=1 -p 5432 -d postgres".split(' '));
        cmd.arg("-U")
            .arg(user)
            .arg("-h")
            .arg(host)
            .arg("-c")
            .arg(sql);
        run(cmd, "psql").await
    }

    /// The pid of a live postmaster serving this cluster (herald was killed, the server was not).
    fn orphan_postmaster(&self) -> Option<i32> {
        let text = fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        // "PID (COMM) STATE ...": a zombie (Z) has exited but is not reaped yet.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, tail) = stat.rsplit_once(')')?;
        let postgres = head.ends_with("(postgres") || head.ends_with("(postmaster");
        let alive = !matches!(tail.split_whitespace().next(), Some("Z" | "X"));
        let cwd = fs::read_link(format!("/proc/{pid}/cwd"));
        (postgres && alive && cwd.map_or(true, |cwd| cwd == self.pgdata)).then_some(pid)
    }

    /// (Re)writes the settings herald owns: unix socket only, `trust` for the superuser only.
    fn write_config(&self) -> Result<()> {
        let dir = self.socket_dir.to_string_lossy();
        let dir = dir.replace('\\', "\\\\").replace('\'', "''");
        let head = "# Written by herald at every start; edits are lost.\n";
        let conf = format!("{head}listen_addresses = ''\nport = 5432\nunix_socket_directories = '{dir}'\nunix_socket_permissions = 0700\n");
        let hba = format!("{head}local all {} trust\n", quote(&self.runner.user.name));
        for (name, text) in [("herald.conf", conf), ("pg_hba.conf", hba)] {
            let path = self.pgdata.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            let user = &self.runner.user;
            chown(&path, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    /// Safety net when `stop` was not called (early return, panic): stop the server anyway.
    fn drop(&mut self) {
        if self.running {
            warn!("EmbeddedPostgres dropped without stop(); stopping PostgreSQL");
            let _ = self.stop_command().output();
        }
    }
}

impl Runner {
    async fn new(data_dir: &Path, cluster: &Path) -> Result<Self> {
        let (euid, pgdata) = (Uid::effective(), cluster.join("data"));
        let switch = euid.is_root();
        let user = match switch {
            true => system_user().await?,
            false => User::from_uid(euid)?.context("the current user has no passwd entry")?,
        };
        let mut runner = Self {
            user,
            pgdata,
            switch,
            cap: None,
        };
        if switch && !runner.can_enter(data_dir).await? {
            let (name, dir) = (runner.user.name.clone(), data_dir.display());
            let cap = dac_capability().with_context(|| format!("user {name} cannot reach {dir} and this process cannot grant it CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE: make the parent directories searchable for it (chmod o+x, or setfacl -m u:{name}:x DIR)"))?;
            info!("user {name} cannot traverse the parents of {dir}: running PostgreSQL with the ambient capability CAP_{}", cap.to_uppercase());
            runner.cap = Some(cap);
            if !runner.can_enter(data_dir).await? {
                bail!("user {name} cannot reach {dir} even with CAP_{cap}");
            }
        }
        Ok(runner)
    }

    /// `program` run as the cluster user (via setpriv when we are root), with PGDATA set.
    fn command(&self, program: &Path) -> Command {
        let setpriv = Path::new("setpriv");
        let mut cmd = Command::new(if self.switch { setpriv } else { program });
        if self.switch {
            let (uid, gid) = (self.user.uid.to_string(), self.user.gid.to_string());
            cmd.args(["--reuid", &uid, "--regid", &gid, "--init-groups"]);
            if let Some(cap) = self.cap {
                let cap = format!("+{cap}");
                cmd.args(["--inh-caps", &cap, "--ambient-caps", &cap]);
            }
            cmd.arg("--").arg(program);
        }
        let mut cmd = clean_env(cmd);
        cmd.current_dir("/").env("PGDATA", &self.pgdata);
        cmd
    }

    async fn can_enter(&self, dir: &Path) -> Result<bool> {
        let mut test = self.command(Path::new("test"));
        test.arg("-d").arg(dir.join("."));
        let out = tokio::process::Command::from(test).output().await;
        let out = out.context("running setpriv")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.is_empty() {
            bail!("setpriv failed: {}", stderr.trim());
        }
        Ok(out.status.success())
    }
}

/// `postgres` (made by the Debian package), else `herald-pg`, created as a system user if missing.
async fn system_user() -> Result<User> {
    for name in ["postgres", "herald-pg"] {
        if let Some(user) = User::from_name(name)? {
            return Ok(user);
        }
    }
    info!("creating the system user herald-pg to run PostgreSQL (it refuses to run as root)");
    let mut add = Command::new("useradd");
    add.args("--system --user-group --no-create-home --home-dir /nonexistent".split(' '));
    add.args(["--shell", "/usr/sbin/nologin", "herald-pg"]);
    run(add, "useradd").await?;
    User::from_name("herald-pg")?.context("useradd succeeded but user herald-pg is missing")
}

/// CAP_DAC_READ_SEARCH if we hold it, else CAP_DAC_OVERRIDE (Docker's default set lacks the first).
fn dac_capability() -> Option<&'static str> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapPrm:"))?;
    let caps = u64::from_str_radix(hex.trim(), 16).ok()?;
    let wanted = [(2, "dac_read_search"), (1, "dac_override")];
    let (_, name) = wanted.into_iter().find(|(bit, _)| caps & (1 << bit) != 0)?;
    Some(name)
}

/// The bin directory of the cluster's own major version if it exists, else of the highest installed.
fn find_bindir(pgdata: &Path) -> Result<PathBuf> {
    let major = |name: &str| name.split('.').next()?.parse::<u32>().ok();
    let (mut found, debian) = (Vec::new(), fs::read_dir("/usr/lib/postgresql"));
    for entry in debian.into_iter().flatten().flatten() {
        if let Some(m) = entry.file_name().to_str().and_then(major) {
            found.push((m, entry.path().join("bin")));
        }
    }
    let pg_config = Command::new("pg_config")
        .args(["--bindir", "--version"])
        .output();
    let text = pg_config.map(|out| out.stdout).unwrap_or_default();
    if let [dir, version, ..] = String::from_utf8_lossy(&text).lines().collect::<Vec<_>>()[..] {
        let version = version.split_whitespace().nth(1).unwrap_or_default();
        found.extend(major(version).map(|m| (m, PathBuf::from(dir))));
    }
    let programs = ["initdb", "pg_ctl", "postgres", "psql"];
    found.retain(|(_, dir)| programs.iter().all(|p| dir.join(p).is_file()));
    found.sort();
    let Some((newest, _)) = found.last().cloned() else {
        bail!("PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin and `pg_config --bindir`): run scripts/ensure-postgres.sh or set DATABASE_URL");
    };
    // An existing cluster needs the major version that made it.
    let version = fs::read_to_string(pgdata.join("PG_VERSION")).unwrap_or_default();
    let want = major(version.trim());
    match found.into_iter().rev().find(|(m, _)| want.is_none_or(|want| *m == want)) {
        Some((_, dir)) => Ok(dir),
        None => bail!("the cluster in {} is PostgreSQL {}, whose binaries are not installed (newest: {newest}): install them or set DATABASE_URL", pgdata.display(), want.unwrap_or_default()),
    }
}

/// Creates (or fixes) a directory owned by `user` with mode 0700; refuses one owned by someone else.
fn private_dir(dir: &Path, user: &User) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && m.uid() == user.uid.as_raw() => {}
        Ok(_) => bail!(
            "{} is not a directory owned by {}",
            dir.display(),
            &user.name
        ),
        Err(_) => {
            let created = DirBuilder::new().mode(0o700).create(dir);
            created.with_context(|| format!("creating {}", dir.display()))?;
            chown(dir, Some(user.uid), Some(user.gid))?;
        }
    }
    Ok(fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?)
}

/// `<cluster>/run`, or `/tmp/herald-pg-<hash>` when the socket path would exceed 107 bytes.
fn socket_dir(cluster: &Path, user: &User) -> Result<PathBuf> {
    let mut dir = cluster.join("run");
    if dir.as_os_str().len() + 1 + SOCKET.len() > 107 {
        // FNV-1a: stable across Rust versions, unlike DefaultHasher.
        let bytes = cluster.as_os_str().as_bytes().iter();
        let hash = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        dir = PathBuf::from(format!("/tmp/herald-pg-{hash:016x}"));
        info!(
            "the socket path in {} is too long: using {}",
            cluster.display(),
            dir.display()
        );
    }
    private_dir(&dir, user)?;
    Ok(dir)
}

/// Drops inherited libpq variables (PGHOST, PGPORT, ...) so they cannot redirect our commands.
fn clean_env(mut cmd: Command) -> Command {
    for (key, _) in std::env::vars_os().filter(|(k, _)| k.as_bytes().starts_with(b"PG")) {
        cmd.env_remove(key);
    }
    cmd
}

async fn run(cmd: Command, what: &str) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = tokio::process::Command::from(cmd).output().await;
    let out = out.with_context(|| format!("{what}: cannot run {program}"))?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if !out.status.success() {
        let (status, stderr, stdout) = (out.status, text(&out.stderr), text(&out.stdout));
        bail!("{what} failed ({status}): {stderr} {stdout}");
    }
    Ok(text(&out.stdout))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Percent-encodes a URL query value (keeps unreserved characters and '/').
fn encode(bytes: &[u8]) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~/".contains(&b);
    let enc = |b: u8| {
        if keep(b) {
            char::from(b).to_string()
        } else {
            format!("%{b:02X}")
        }
    };
    bytes.iter().map(|&b| enc(b)).collect()
}
