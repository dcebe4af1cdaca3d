//! The command line. Only clap definitions live here; `commands` does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCandidates;

use crate::completion;

#[derive(Debug, Parser)]
#[command(
    name = "stack",
    version,
    about = "now's deploy workflow on one machine: immutable deployments, path aliases, shared sessions",
    propagate_version = true
)]
pub struct Cli {
    /// The project directory (where `services/` and `.stack/` live).
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub cwd: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build and start every service (or those named), Redis and the proxy; watch and redeploy.
    Up(UpArgs),
    /// Point a hostname at a rules file, a service or a deployment; list or remove aliases.
    Alias(AliasArgs),
    /// Explain which rule of an alias serves a request, and where it goes.
    Route(RouteArgs),
    /// Run N instances of a service or deployment (0 stops it).
    Scale(ScaleArgs),
    /// List deployments: url, instances, state, age.
    Ls(LsArgs),
    /// Show stored and live logs of a service or deployment.
    Logs(LogsArgs),
    /// Show the last requests the proxy answered: rule, deployment, instance, session.
    Requests(RequestsArgs),
    /// Point a service back at an earlier deployment, without rebuilding.
    Rollback(RollbackArgs),
    /// Give a service's instances new processes, one at a time, with no failed request.
    Restart(RestartArgs),
    /// Run a command with the environment a service's instances get (secret, Redis, `.env`).
    Exec(ExecArgs),
    /// Remove a deployment.
    Rm(RmArgs),
    /// Stop everything that `stack up` started.
    Down,
    /// Inspect the session store: ids, TTLs, decoded contents.
    Redis(RedisArgs),
    /// Write a new project from a template.
    Init(InitArgs),
    /// Render an alias as a production config.
    Export(ExportArgs),
    /// Print a shell's completion script (service, deployment and alias names complete too).
    Completions(CompletionsArgs),
    /// Open an alias (the first one by default) in the browser, or print its URL.
    Open(OpenArgs),
    /// Check what `stack up` needs here: programs, the port, leftovers, `.env`, permissions.
    Doctor(DoctorArgs),
    /// Install the local CA (it signs `localhost` names only) where browsers and tools look.
    Trust(TrustArgs),
    /// Show the resolved services (stack.toml and detection), each setting with its origin.
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the services as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Remove the CA from every place `stack trust` put it.
    #[arg(long, conflicts_with = "print")]
    pub uninstall: bool,
    /// Print the CA certificate's path (made if there is none yet) and change nothing.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
    /// The proxy port to check (the one `stack up --port` will get).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// The HTTPS port to check (the one `stack up --https-port` will get).
    #[arg(
        long,
        default_value_t = 3443,
        env = "STACK_HTTPS_PORT",
        value_name = "PORT"
    )]
    pub https_port: u16,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The alias (its host) to open; the first alias when omitted, else the dashboard.
    #[arg(add = ArgValueCandidates::new(completion::aliases))]
    pub host: Option<String>,
    /// Print the URL instead of opening a browser.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Services to start, by name (`writer`) or by path (`./writer`); all under `services/` when none.
    pub services: Vec<String>,
    /// Read environment variables from a dotenv file: `--dotenv` reads `.env`, `--dotenv=FILE`
    /// another file (the `=` keeps a following service name from being taken for a file).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = ".env", require_equals = true)]
    pub dotenv: Option<PathBuf>,
    /// Set an environment variable for every service (repeatable; later wins).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The proxy's port (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    pub port: u16,
    /// The proxy's HTTPS port: every host with HTTP/2 and HTTP/1.1, certificates from the local
    /// CA (0 picks a free one).
    #[arg(
        long,
        default_value_t = 3443,
        env = "STACK_HTTPS_PORT",
        value_name = "PORT"
    )]
    pub https_port: u16,
    /// Serve no HTTPS.
    #[arg(long)]
    pub no_https: bool,
    /// Do not watch for changes.
    #[arg(long)]
    pub no_watch: bool,
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
    /// How many deployments' artifacts to keep per service.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub keep: usize,
    /// How long an instance gets to accept connections (or pass its health check).
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::units::duration_arg)]
    pub ready_timeout: std::time::Duration,
    /// How long an instance gets to send its response headers; after that the request gets a
    /// 504 and the instance leaves the rotation until it answers again.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = crate::units::duration_arg)]
    pub upstream_timeout: std::time::Duration,
    /// Rotate a deployment's log file in `.stack/logs/` when it reaches this size.
    #[arg(long, default_value = "10MB", value_name = "SIZE", value_parser = crate::units::size_arg)]
    pub log_size: u64,
    /// How many files of a deployment's log to keep, the current one included.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub log_files: u16,
    /// The most instances `stack scale` may run of one deployment.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_instances: usize,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AliasArgs {
    #[command(subcommand)]
    pub command: Option<AliasCommand>,
    /// The hostname to point (e.g. `counter-demo.localhost`).
    pub host: Option<String>,
    /// A service or deployment to point the host at (a plain alias).
    #[arg(add = ArgValueCandidates::new(completion::targets))]
    pub target: Option<String>,
    /// A now-compatible rules file (a path alias).
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// List aliases, or one alias's rules as a table.
    Ls {
        #[arg(add = ArgValueCandidates::new(completion::aliases))]
        host: Option<String>,
        /// Print JSON (for one host: a rules file `stack alias --rules` takes back).
        #[arg(long)]
        json: bool,
    },
    /// Remove an alias.
    Rm {
        #[arg(add = ArgValueCandidates::new(completion::aliases))]
        host: String,
    },
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[arg(add = ArgValueCandidates::new(completion::aliases))]
    pub host: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// A service or a deployment id.
    #[arg(add = ArgValueCandidates::new(completion::targets))]
    pub target: String,
    pub instances: usize,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A service or a deployment id, or one instance of it as its lines are prefixed
    /// (`reader.1`).
    #[arg(add = ArgValueCandidates::new(completion::targets))]
    pub target: String,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// How many stored lines to print first [default: 100, or every line with --since].
    #[arg(short = 'n', long)]
    pub lines: Option<usize>,
    /// Only lines from this time on: a duration back from now (`90s`, `10m`, `1h30m`, `2d`) or
    /// an RFC 3339 time (`2026-11-28T10:00:00Z`).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// How many of the last requests to print first (the proxy keeps 1,000).
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new requests.
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Only requests to this host (port and case ignored).
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Only these statuses: `404`, a class such as `5xx`, or several with commas (`404,5xx`).
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[arg(add = ArgValueCandidates::new(completion::services))]
    pub service: String,
    /// The deployment to go back to (the previous one when omitted).
    #[arg(add = ArgValueCandidates::new(completion::deployments))]
    pub deployment: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// A service or a deployment id, or one instance of it as its log lines name it
    /// (`reader.1`).
    #[arg(add = ArgValueCandidates::new(completion::instance_targets))]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A service (its live deployment) or a deployment id.
    #[arg(add = ArgValueCandidates::new(completion::targets))]
    pub target: String,
    /// The program and its arguments, run in the current directory (`--` before it when it
    /// has options of its own).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(add = ArgValueCandidates::new(completion::deployments))]
    pub deployment: String,
}

#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Read `REDIS_SESSION_URL` and `SESSION_SECRET` from a dotenv file: `--dotenv` reads
    /// `.env`, `--dotenv=FILE` another file (so `get --dotenv COOKIE` reads `.env`).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = ".env", require_equals = true, global = true)]
    pub dotenv: Option<PathBuf>,
    #[command(subcommand)]
    pub command: RedisCommand,
}

#[derive(Debug, Subcommand)]
pub enum RedisCommand {
    /// List sessions (SCAN, never KEYS).
    Keys {
        #[arg(default_value = "sess:*")]
        pattern: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one session, by id, signed cookie value or `connect.sid=...` header.
    Get {
        what: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete sessions (log users out).
    Del {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete every `sess:*` key.
    Flush {
        #[arg(long)]
        yes: bool,
    },
    /// A live feed of session writes, deletes and expiries.
    Watch,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[arg(long, default_value = "rust", value_parser = ["rust", "node"])]
    pub template: String,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub format: ExportFormat,
}

#[derive(Debug, Subcommand)]
pub enum ExportFormat {
    /// An nginx config that routes like the alias.
    Nginx {
        alias: String,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Run `nginx -t` on the result.
        #[arg(long)]
        check: bool,
        /// Add a TLS server block (HTTP/2) with this certificate (chain) file.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The TLS server block's private key file.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The TLS server block's `listen` parameter.
        #[arg(long, value_name = "LISTEN", default_value = "443")]
        tls_listen: String,
    },
}
