//! The `herald` command line: one binary, several subcommands. Only the requested output goes
//! to stdout (a created key, a project id, the OpenAPI document); logs go to stderr.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: an event-sourced API for asynchronous jobs"
)]
pub struct Cli {
    /// Configuration file (default: ./herald.toml when it exists). Also `HERALD_CONFIG`.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (and, without DATABASE_URL, its embedded PostgreSQL).
    Serve {
        /// Address to listen on (overrides `listen` / `HERALD_LISTEN`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI document.
    Openapi,
    /// Inspect or rebuild projections.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Manage projects.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Check the request log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the request log's hash chain; exits non-zero at the first broken link.
    Verify {
        /// Only records at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only records before this time (RFC 3339).
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// `SEQ:HASH` of a record an earlier check printed as its last: it must still be
        /// there with that hash (or pruned by retention).
        #[arg(long)]
        witness: Option<crate::audit::Witness>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user. Prints a generated one-time password on stdout, or, with
    /// `--password-stdin`, reads the password from the first line of stdin and prints the id.
    Create {
        #[arg(long)]
        email: String,
        /// Make the user an admin (default: a member with no projects yet).
        #[arg(long)]
        admin: bool,
        /// Read the password from stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Show each projection's checkpoint and lag.
    List,
    /// Empty a read model and replay it from the log (the server may keep running).
    Rebuild {
        /// Projection name, as listed by `herald projections list`.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project and print its id.
    Create {
        /// The project's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (once) on stdout.
    Create(KeyCreateArgs),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// Comma-separated scopes, e.g. `jobs:read,jobs:write` (or `admin`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
    /// The project the key is bound to; omit only for admin keys.
    #[arg(long)]
    pub project: Option<uuid::Uuid>,
    /// Days until the key expires (default: never).
    #[arg(long)]
    pub expires_in_days: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keys_create_takes_comma_separated_scopes() {
        let cli = Cli::parse_from([
            "herald",
            "keys",
            "create",
            "--name",
            "ci",
            "--scopes",
            "jobs:read,jobs:write",
        ]);
        let Command::Keys(KeysCommand::Create(args)) = cli.command else {
            panic!("parsed the wrong command");
        };
        assert_eq!(args.scopes, ["jobs:read", "jobs:write"]);
    }
}
