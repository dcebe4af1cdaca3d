//! The start of a `stack up`, in order: the project's lock, the environment (checked before
//! anything starts), leftovers of a killed run, the proxy's port (a busy one fails fast), the
//! control socket (bound before the first build, so `stack ls` shows it and `stack down` stops
//! it), the build alongside the managed Redis, then the deployments, the supervisor, the proxy
//! and the watcher.
//!
//! Printed on stdout, in this order (tests and scripts may rely on the `Proxy listening` line):
//!
//! ```text
//! > Built writer, reader [0.4s]
//! > Redis ready at redis://127.0.0.1:PORT (managed, data in .stack/redis)
//! > Proxy listening on http://127.0.0.1:PORT
//! > Ready! http://writer-abcdefghij.localhost:PORT [1.2s]
//! writer.0 | ...
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::aliases::{self, Aliases};
use super::builds::Builds;
use super::env::{SecretSource, ServiceEnv, ServiceEnvError};
use super::history::{self, RecordError};
use super::progress::BuildView;
use super::reconfigure::{self, StopOrder};
use super::redeploy::{self, Redeployer};
use super::report;
use super::stop::{Signals, StopReason};
use super::{redis, Daemon, DaemonConfig, Live, WaitingStart};
use crate::config::{self, model::Condition, ServicesError};
use crate::control::{
    self,
    api::{deployment_urls, https_url},
    lock::ProjectLock,
};
use crate::env::REDIS_SESSION_URL;
use crate::init;
use crate::output::{self, CliError, CliResult};
use crate::prerequisites;
use crate::proxy::{self, Routing, RoutingTable};
use crate::redis::managed::{self, ManagedRedis};
use crate::state::{self, secret};
use crate::supervisor::build::{self, BuildError, Built, Service};
use crate::supervisor::logs::{self, Redactor};
use crate::supervisor::{self, process, DeploymentState, Supervisor, SupervisorError};
use crate::tls;

/// How a start ended.
pub enum Start {
    /// Everything runs; [`Launched::shutdown`] stops it.
    Launched(Box<Launched>),
    /// Stopped by a signal or `stack down` during the first build; nothing is left running.
    Stopped(StopReason),
}

/// What a started `stack up` owns, for [`Launched::shutdown`](super::shutdown) to stop in
/// order. The guards go last, in this order: the socket file, the process watchdog, the lock.
pub struct Launched {
    pub daemon: Daemon,
    pub(super) root: CancellationToken,
    pub(super) supervisor: Supervisor,
    pub(super) supervisor_task: JoinHandle<()>,
    pub(super) routes_task: JoinHandle<()>,
    pub(super) proxy_task: JoinHandle<()>,
    pub(super) control_task: JoinHandle<()>,
    /// The redeploy task, which owns the watcher.
    pub(super) watching: Option<JoinHandle<()>>,
    pub(super) redis: Option<ManagedRedis>,
    /// Cancelled when a dependency failed the start: `stack up` stops then, with exit 1.
    pub start_failed: CancellationToken,
    /// Dependents before what they depend on: the start order reversed.
    pub(super) stop_order: StopOrder,
    pub(super) _socket: SocketFile,
    pub(super) _watchdog: process::Guard,
    pub(super) _lock: ProjectLock,
}

/// The control socket's file, removed when `stack up` returns (it still holds the project's
/// lock then, so no other `stack up` has bound a socket of its own in its place).
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Daemon {
    /// Starts everything `config` asks for, or stops early (cleanly) when `signals` or `stack
    /// down` say so during the first build. An error means nothing of the stack runs.
    pub async fn start(mut config: DaemonConfig, signals: &mut Signals) -> CliResult<Start> {
        let started = Instant::now();
        let project_dir = config.project_dir.canonicalize().map_err(|error| {
            CliError::new(format!(
                "cannot open the project directory `{}`: {error}",
                config.project_dir.display()
            ))
            .hint("Pass an existing directory with `--cwd`.")
        })?;
        // What to run, first: a directory with nothing to run (or a `stack.toml` with errors)
        // gets its error before anything is written there or under `$STACK_HOME`.
        let services = project_services(&project_dir, &config.services)?;
        // A relative dotenv file is the project's (an absolute one stays as it is).
        config.env.dotenv = config.env.dotenv.map(|file| project_dir.join(file));
        let stack_dir = project_dir.join(state::STATE_DIR);
        state::create_private_dir(&stack_dir).map_err(|error| {
            CliError::new(format!("cannot create `{}`: {error}", stack_dir.display()))
        })?;
        let lock = control::lock::acquire(&project_dir, &stack_dir).map_err(|error| {
            CliError::new(error.to_string()).hint(
                "Use that one (`stack ls`, `stack logs`), or stop it with `stack down` first.",
            )
        })?;
        raise_open_file_limit();
        // Everything below is checked before anything starts.
        let ca = match config.https_port {
            Some(_) => {
                let ca = load_ca()?;
                config.env.ca_file = Some(ca.cert_path());
                Some(ca)
            }
            None => None,
        };
        let mut service_env = start_environment(&project_dir, &config)?;
        let pids_dir = process::pids_dir(&project_dir);
        let leftovers = process::kill_leftovers(&pids_dir);
        if !leftovers.is_empty() {
            output::warn(format!(
                "stopped {} process(es) left running by an earlier `stack up` that did not exit cleanly",
                leftovers.len()
            ));
        }
        crate::state::create_private_dir(&pids_dir).map_err(|error| {
            CliError::new(format!("cannot create `{}`: {error}", pids_dir.display()))
        })?;
        // Lives as long as this process; if it is killed, the watchdog stops what it started.
        let watchdog =
            process::start_guard(&pids_dir).map_err(|error| CliError::new(error.to_string()))?;
        let listener = TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|error| {
                CliError::new(format!("cannot listen on 127.0.0.1:{}: {error}", config.port)).hint(
                    "Another program uses that port: pick another with `--port` (0 picks a free one).",
                )
            })?;
        let proxy_port = listener
            .local_addr()
            .map_err(|error| CliError::new(format!("cannot read the proxy's address: {error}")))?
            .port();
        let https = match (config.https_port, ca) {
            (Some(port), Some(ca)) => Some(bind_https(port, ca).await?),
            _ => None,
        };
        let https_port = https.as_ref().map(|https| https.port);
        check_prerequisites(&services, &service_env.vars, AGAIN)?;
        check_programs(&services, &service_env.vars, AGAIN)?;

        let root = CancellationToken::new();
        let builds = Builds::default();
        let first_build = builds.start(&services);
        let daemon = Daemon::starting(&project_dir, builds.clone());
        let socket = control::socket_path(&project_dir);
        let control_listener = control::server::bind(&socket).map_err(|error| {
            CliError::new(format!("cannot listen on `{}`: {error}", socket.display()))
        })?;
        let socket = SocketFile(socket);
        let control_task = tokio::spawn(control::server::serve(
            control_listener,
            daemon.clone(),
            root.child_token(),
        ));

        let logs_dir = logs::logs_dir(&project_dir);
        let first = FirstBuild {
            project_dir: &project_dir,
            services: &services,
            release: config.release,
            started,
        };
        let (built, redis) = match first
            .alongside_redis(&pids_dir, &logs_dir, &service_env.vars, signals, &daemon)
            .await?
        {
            Ok(both) => both,
            Err(reason) => {
                root.cancel();
                return Ok(Start::Stopped(reason));
            }
        };
        if let Some(redis) = &redis {
            service_env
                .vars
                .insert(REDIS_SESSION_URL.into(), redis.url());
            output::info(format!(
                "Redis ready at {} (managed, data in .stack/{}, password in .stack/{})",
                redis::shown(&redis.url()),
                managed::DATA_DIR,
                secret::REDIS_PASSWORD
            ));
            tokio::spawn(report::follow_redis(redis.subscribe(), root.child_token()));
        }

        // Alias and scale changes made during the build are in it; later ones wait for the start.
        let state = daemon
            .read_state_for_start()
            .map_err(|error| CliError::new(error.to_string()))?;
        let record = history::StartRecord {
            release: config.release,
            keep: config.keep,
            proxy_port,
            https_port,
        };
        let specs = match history::record_start(daemon.store(), &built, &record) {
            Ok(specs) => cap_instances(specs, config.max_instances),
            Err(error) => {
                if let Some(redis) = redis {
                    redis.stop(supervisor::DEFAULT_GRACE).await;
                }
                return Err(match error {
                    RecordError::Build(error) => build_error(error),
                    RecordError::State(error) => CliError::new(error.to_string()),
                });
            }
        };

        let redis_url = service_env.redis_url().unwrap_or_default().to_string();
        let redactor = Redactor::new(crate::env::secret_values(&service_env.vars));
        let session_secrets = service_env
            .vars
            .get(crate::env::SESSION_SECRET)
            .and_then(|value| session::cookie::Secrets::parse(value).ok());
        let live_redactor = redactor.clone();
        let (supervisor, supervisor_task) = Supervisor::start(supervisor::Config {
            pids_dir,
            logs_dir,
            env: service_env.vars,
            redactor,
            log_rotation: config.log_rotation,
            grace: supervisor::DEFAULT_GRACE,
            ready_timeout: config.ready_timeout,
            echo_logs: true,
            shutdown: root.child_token(),
        });

        // Routing: rebuilt whole after every change of the supervisor or of the aliases.
        let routing = Routing::new(RoutingTable::new());
        let waiting: Arc<super::WaitingStarts> = Arc::default();
        let aliases = Arc::new(Aliases::new(
            state.aliases,
            routing.clone(),
            waiting.clone(),
        ));
        let request_log = request_log_wanted().then(proxy::RequestLog::new);
        let mut proxy_config = proxy::ProxyConfig::with_response_timeout(config.upstream_timeout);
        proxy_config.request_log = request_log.clone();
        proxy_config.reserved = Some(crate::dashboard::reserved_host(
            daemon.clone(),
            proxy_port,
            https_port,
            root.child_token(),
        ));
        let https_ca = https.as_ref().map(|https| Arc::clone(&https.ca));
        let proxy_task = start_proxy(listener, https, routing, proxy_config, root.child_token())?;
        output::info(format!("Proxy listening on http://127.0.0.1:{proxy_port}"));
        if let (Some(port), Some(ca)) = (https_port, &https_ca) {
            output::info(format!(
                "Proxy listening on https://localhost:{port} (HTTP/2; certificates from the local CA `{}`)",
                ca.cert_path().display()
            ));
            if !tls::trust::is_trusted(ca.dir()) {
                output::info(
                    "This machine does not trust the local CA yet: run `stack trust` once (it can sign `localhost` names only)",
                );
            }
        }
        output::info(format!(
            "Dashboard at http://{}{}",
            crate::state::aliases::RESERVED_HOST,
            port_suffix(proxy_port)
        ));
        let routes_task = tokio::spawn(aliases::follow(
            aliases.clone(),
            supervisor.clone(),
            root.child_token(),
        ));
        let live = Arc::new(Live {
            supervisor: supervisor.clone(),
            aliases,
            proxy_port,
            https_port,
            redis_url,
            redis: redis.as_ref().map(ManagedRedis::subscribe),
            ready_timeout: config.ready_timeout,
            max_instances: config.max_instances,
            requests: request_log,
            session_secrets,
            redactor: live_redactor,
            session_cache: Default::default(),
            waiting,
        });
        daemon.run(live.clone());
        drop(first_build);

        let start_failed = CancellationToken::new();
        // Only where something depends on something: otherwise all stop at once, as before.
        let stop_order: StopOrder = Arc::new(Mutex::new(reconfigure::stop_order(&services)));
        let ordered = OrderedStart {
            live: live.clone(),
            specs,
            depends_on: services
                .iter()
                .map(|service| (service.name.clone(), service.depends_on.clone()))
                .collect(),
            started,
        };
        // Saves made while the first deployments start wait for them, so that no redeploy
        // races the start's own deploy of the same service.
        let first_deploys = CancellationToken::new();
        tokio::spawn(ordered.run(
            start_failed.clone(),
            first_deploys.clone(),
            root.child_token(),
        ));
        for (host, alias) in live.aliases.all() {
            let https = https_port
                .map(|port| format!(" {}", https_url(&host, port)))
                .unwrap_or_default();
            output::info(format!(
                "Alias http://{host}{}{https} -> {}",
                port_suffix(proxy_port),
                alias.source()
            ));
        }

        let watching = if config.watch {
            let redeployer = Redeployer {
                live,
                store: daemon.store().clone(),
                services,
                requested: config.services.clone(),
                first_deploys,
                stop_order: stop_order.clone(),
                release: config.release,
                keep: config.keep,
                env: config.env.clone(),
                managed_redis: redis.as_ref().map(ManagedRedis::url),
                builds,
                built_trees: Default::default(),
            };
            match redeploy::start_watching(redeployer, root.child_token()) {
                Ok(watching) => {
                    output::info("Watching for changes (every save becomes a new deployment)");
                    Some(watching)
                }
                Err(error) => {
                    output::print_error(&error);
                    None
                }
            }
        } else {
            None
        };

        Ok(Start::Launched(Box::new(Launched {
            daemon,
            root,
            supervisor,
            supervisor_task,
            routes_task,
            proxy_task,
            control_task,
            watching,
            redis,
            start_failed,
            stop_order,
            _socket: socket,
            _watchdog: watchdog,
            _lock: lock,
        })))
    }
}

/// What the prerequisite errors of the start tell a user to do once installed.
const AGAIN: &str = "run `stack up` again";

/// Whether the proxy logs requests: on unless `STACK_REQUEST_LOG` is `off` (or `0`, `false`),
/// which the proxy benchmark uses to measure what the log costs.
fn request_log_wanted() -> bool {
    !matches!(
        std::env::var("STACK_REQUEST_LOG").as_deref(),
        Ok("off" | "0" | "false")
    )
}

/// Raises the soft limit on open files to the hard one, as nginx's `worker_rlimit_nofile`
/// and Go's runtime do: at the common soft limit of 1024, a thousand idle keep-alive
/// connections would leave the proxy unable to accept another. The services inherit it.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%error, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-file limit"),
    }
}

/// Every program the services and the managed Redis will need is there, or the start ends
/// now, naming each missing one with the command that installs them all: a missing
/// `redis-server` costs a second, not a build.
pub(super) fn check_prerequisites(
    services: &[Service],
    env: &BTreeMap<String, String>,
    again: &str,
) -> CliResult<()> {
    let needs = prerequisites::Needs {
        managed_redis: !env.contains_key(REDIS_SESSION_URL),
        node: services
            .iter()
            .any(|service| service.kind == build::ServiceKind::Npm),
    };
    let missing = prerequisites::missing(needs, env.get("PATH").map(String::as_str));
    if missing.is_empty() {
        return Ok(());
    }
    let verb = if missing.len() == 1 { "is" } else { "are" };
    let mut why: Vec<&str> = missing.iter().map(|tool| tool.needed_for()).collect();
    why.dedup();
    let mut hint = format!(
        "Install {} with `{}`, then {again}.",
        if missing.len() == 1 { "it" } else { "them" },
        prerequisites::install_command(&missing, prerequisites::Os::detect())
    );
    if needs.managed_redis && missing.contains(&prerequisites::Tool::RedisServer) {
        hint.push_str(" Or set `REDIS_SESSION_URL` to a Redis you run yourself.");
    }
    Err(CliError::new(format!(
        "{} {verb} not installed (not found on PATH), and needed for {}; nothing was built",
        prerequisites::names(&missing),
        why.join(" and ")
    ))
    .hint(hint))
}

/// The environment of the first start: every bad line at once and nothing started, the
/// generated secret announced (never shown).
fn start_environment(project_dir: &Path, config: &DaemonConfig) -> CliResult<ServiceEnv> {
    if let Some(dotenv) = &config.env.dotenv {
        if let Some(warning) = init::dotenv_warning(project_dir, dotenv) {
            output::warn(warning);
        }
    }
    let stack_dir = project_dir.join(state::STATE_DIR);
    let assembled = ServiceEnv::assemble(&stack_dir, &config.env, None).map_err(|error| match error {
        ServiceEnvError::Invalid(errors) => {
            let n_errors = errors.0.len();
            CliError::new(format!(
                "the environment has {} ({n_errors} shown; values are never printed):\n{errors}",
                if n_errors == 1 { "an error".to_string() } else { format!("{n_errors} errors") },
            ))
            .hint(if errors.only_unreadable() {
                "Give `--dotenv` a readable UTF-8 text file of `KEY=VALUE` lines, or leave it out. Nothing was started."
            } else {
                "Fix the lines above (`KEY=VALUE`, keys of letters, digits and `_`). Nothing was started."
            })
        }
        secret @ ServiceEnvError::Secret { .. } => CliError::new(secret.to_string()).hint(
            "Set SESSION_SECRET in `.env` (with `--dotenv`) or with `-e SESSION_SECRET=...`.",
        ),
    })?;
    if let SecretSource::Generated { created } = assembled.secret {
        output::info(format!(
            "SESSION_SECRET is not set: using the project's {} secret in `{}` (set it in .env to choose your own)",
            if created { "new" } else { "generated" },
            secret::path(Path::new(state::STATE_DIR)).display()
        ));
    }
    Ok(assembled)
}

/// The first build of every service.
struct FirstBuild<'a> {
    project_dir: &'a Path,
    services: &'a [Service],
    release: bool,
    started: Instant,
}

impl FirstBuild<'_> {
    /// Builds while Redis starts (neither waits for the other). The outer error is a failed
    /// start (with Redis stopped again); the inner one a stop requested meanwhile (cargo killed,
    /// Redis stopped gracefully).
    async fn alongside_redis(
        &self,
        pids_dir: &Path,
        logs_dir: &Path,
        service_env: &std::collections::BTreeMap<String, String>,
        signals: &mut Signals,
        daemon: &Daemon,
    ) -> CliResult<Result<(Vec<Built>, Option<ManagedRedis>), StopReason>> {
        let stack_dir = self.project_dir.join(state::STATE_DIR);
        let mut build = Box::pin(self.build_with_progress());
        let mut redis_start = Box::pin(redis::start(&stack_dir, pids_dir, logs_dir, service_env));
        let (mut built, mut redis) = (None, None);
        while built.is_none() || redis.is_none() {
            tokio::select! {
                done = &mut build, if built.is_none() => built = Some(done),
                done = &mut redis_start, if redis.is_none() => redis = Some(done),
                reason = signals.stop_requested(daemon.down_requested()) => {
                    output::info("Stopping...");
                    let stopping = Instant::now();
                    drop(build); // kills cargo
                    let redis = match redis {
                        Some(redis) => redis,
                        None => redis_start.await,
                    };
                    if let Ok(Some(redis)) = redis {
                        redis.stop(supervisor::DEFAULT_GRACE).await;
                    }
                    output::info(format!("Stopped everything [{:.1}s]", stopping.elapsed().as_secs_f64()));
                    return Ok(Err(reason));
                }
            }
        }
        match (built, redis) {
            (Some(Ok(built)), Some(Ok(redis))) => Ok(Ok((built, redis))),
            // Nothing of the stack may run after a failed start: stop Redis if it came up.
            (Some(Err(error)), Some(Ok(Some(redis)))) => {
                redis.stop(supervisor::DEFAULT_GRACE).await;
                Err(error)
            }
            (Some(Err(error)), _) | (_, Some(Err(error))) => Err(error),
            _ => unreachable!("the loop ends once both are done"),
        }
    }

    /// Builds with the progress in view (a bar on a terminal, periodic lines elsewhere);
    /// prints the compiler's output on failure, `> Built ...` on success.
    async fn build_with_progress(&self) -> CliResult<Vec<Built>> {
        let names: Vec<&str> = self
            .services
            .iter()
            .map(|service| service.name.as_str())
            .collect();
        let view = BuildView::new(names.join(", "));
        let progress = |progress: build::Progress<'_>| view.update(progress);
        let mut build = std::pin::pin!(build::build(
            self.project_dir,
            self.services,
            self.release,
            &progress
        ));
        // A build script may run for a while without a word: the view still says it runs.
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let result = loop {
            tokio::select! {
                result = &mut build => break result,
                _ = ticks.tick() => view.tick(),
            }
        };
        view.finish();
        let built = result.map_err(build_error)?;
        output::info(format!(
            "Built {} [{:.1}s]",
            names.join(", "),
            self.started.elapsed().as_secs_f64()
        ));
        Ok(built)
    }
}

/// Serves the proxy on one current-thread runtime per core on the shared socket (nginx's
/// model): measured cheaper per request than the multi-thread runtime (bench/RESULTS.md,
/// issue 4).
fn start_proxy(
    listener: TcpListener,
    https: Option<Https>,
    routing: Routing,
    config: proxy::ProxyConfig,
    shutdown: CancellationToken,
) -> CliResult<JoinHandle<()>> {
    let hand_over = |listener: TcpListener| {
        listener
            .into_std()
            .map_err(|error| CliError::new(format!("cannot hand the proxy its socket: {error}")))
    };
    let listener = hand_over(listener)?;
    let tls = match https {
        Some(https) => Some(proxy::TlsListener {
            listener: hand_over(https.listener)?,
            config: https.config,
        }),
        None => None,
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(tokio::task::spawn_blocking(move || {
        if let Err(error) = proxy::run_on_threads(listener, tls, routing, config, threads, shutdown)
        {
            tracing::error!(%error, "the proxy stopped");
        }
    }))
}

/// The proxy's HTTPS side, ready before anything starts.
struct Https {
    listener: TcpListener,
    port: u16,
    ca: Arc<tls::Ca>,
    config: Arc<rustls::ServerConfig>,
}

/// The local CA under `$STACK_HOME`, made on first use; announced when new.
fn load_ca() -> CliResult<tls::Ca> {
    let home = tls::stack_home();
    let ca = tls::Ca::load_or_create(&home)
        .map_err(|error| CliError::new(error.to_string()).hint(error.hint()))?;
    if ca.created() {
        output::info(format!(
            "Created the local CA `{}` (it can sign `localhost`, `*.localhost`, 127.0.0.0/8 and ::1 only; its key stays in `{}`)",
            ca.cert_path().display(),
            home.join(tls::CA_KEY_FILE).display()
        ));
    }
    Ok(ca)
}

/// Binds the HTTPS port (a busy one fails before anything starts, naming `--https-port`).
async fn bind_https(port: u16, ca: tls::Ca) -> CliResult<Https> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|error| {
        CliError::new(format!("cannot listen on 127.0.0.1:{port} for HTTPS: {error}")).hint(
            "Another program uses that port: pick another with `--https-port` (0 picks a free one), or serve no HTTPS with `--no-https`.",
        )
    })?;
    let port = listener
        .local_addr()
        .map_err(|error| CliError::new(format!("cannot read the HTTPS address: {error}")))?
        .port();
    let ca = Arc::new(ca);
    let config = tls::server_config(Arc::clone(&ca))
        .map_err(|error| CliError::new(error.to_string()).hint(error.hint()))?;
    Ok(Https {
        listener,
        port,
        ca,
        config,
    })
}

/// The services of the project (`stack.toml` resolved against discovery), or every error of
/// the file at once with nothing started.
fn project_services(project_dir: &Path, requested: &[String]) -> CliResult<Vec<Service>> {
    let resolved = config::load_resolved(project_dir).map_err(|errors| {
        errors.to_cli("Fix the file and run `stack up` again. Nothing was started.")
    })?;
    config::services(project_dir, &resolved, requested).map_err(|error| match error {
        ServicesError::Build(error) => build_error(error),
        ServicesError::Config(errors) => {
            errors.to_cli("Fix the file and run `stack up` again. Nothing was started.")
        }
        env_file @ ServicesError::EnvFile { .. } => CliError::new(env_file.to_string())
            .hint("Fix the file and run `stack up` again. Nothing was started."),
    })
}

/// Every program a declared service's `build` or `run` names is on PATH, or the start ends
/// now naming each with the services that need it.
pub(super) fn check_programs(
    services: &[Service],
    env: &BTreeMap<String, String>,
    again: &str,
) -> CliResult<()> {
    let commands = Service::programs_of(services);
    let missing = prerequisites::missing_programs(&commands, env.get("PATH").map(String::as_str));
    let Some(first) = missing.first() else {
        return Ok(());
    };
    let lines: Vec<String> = missing
        .iter()
        .map(|entry| {
            let quoted: Vec<String> = entry
                .services
                .iter()
                .map(|name| {
                    let written = services
                        .iter()
                        .find(|service| service.name == *name)
                        .and_then(|service| service.where_it_names(&entry.program));
                    match written {
                        Some(at) => format!("`{name}`, {at}"),
                        None => format!("`{name}`"),
                    }
                })
                .collect();
            format!("`{}` (for {})", entry.program, quoted.join(", "))
        })
        .collect();
    let hint = match prerequisites::interpreter_hint(&first.program, prerequisites::Os::detect()) {
        Some(command) => format!("Install it (`{command}`), then {again}."),
        None => format!(
            "Install it, or change the service's `build`/`run` in `stack.toml` (or its `Procfile` line), then {again}."
        ),
    };
    Err(CliError::new(format!(
        "{} not installed (not found on PATH); nothing was built",
        lines.join(" and ")
    ))
    .hint(hint))
}

/// The first start of every deployment in `depends_on` order: each waits for what it depends
/// on (running, ready, or exited 0) before it starts, and only for that: a service that depends
/// on nothing, or on what is there already, starts while others still wait. A dependency that
/// fails ends the start, naming it and what its check or its exit said.
struct OrderedStart {
    live: Arc<Live>,
    specs: Vec<(supervisor::DeploymentSpec, usize)>,
    depends_on: BTreeMap<String, BTreeMap<String, Condition>>,
    started: Instant,
}

/// One first deployment's entry in [`Live::waiting`], under its lock.
struct WaitingEntry<'a> {
    all: std::sync::MutexGuard<'a, std::collections::BTreeMap<String, WaitingStart>>,
    id: String,
}

impl WaitingEntry<'_> {
    fn as_mut(&mut self) -> Option<&mut WaitingStart> {
        self.all.get_mut(&self.id)
    }

    /// No longer waiting: what it was.
    fn take(&mut self) -> Option<WaitingStart> {
        self.all.remove(&self.id)
    }
}

/// What one first deployment's start shares with the others'.
struct StartShared<'a> {
    /// Each service's deployment id.
    ids: BTreeMap<String, String>,
    /// Cancelled once that service's first deployment is with the supervisor: only then can
    /// what depends on it wait for it.
    handed: BTreeMap<String, CancellationToken>,
    /// What others wait on to complete: it says so when it did, not that it is ready.
    one_shots: std::collections::BTreeSet<String>,
    start_failed: &'a CancellationToken,
    shutdown: &'a CancellationToken,
}

impl OrderedStart {
    /// `deployed` is cancelled once every first deployment was handed to the supervisor (or
    /// the start ended).
    async fn run(
        self,
        start_failed: CancellationToken,
        deployed: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let _deployed = deployed.drop_guard();
        let shared = StartShared {
            ids: self
                .specs
                .iter()
                .map(|(spec, _)| (spec.service.clone(), spec.id.clone()))
                .collect(),
            handed: self
                .specs
                .iter()
                .map(|(spec, _)| (spec.service.clone(), CancellationToken::new()))
                .collect(),
            one_shots: self
                .depends_on
                .values()
                .flat_map(|dependencies| dependencies.iter())
                .filter(|(_, condition)| **condition == Condition::Completed)
                .map(|(dependency, _)| dependency.clone())
                .collect(),
            start_failed: &start_failed,
            shutdown: &shutdown,
        };
        {
            let mut waiting = self
                .live
                .waiting
                .lock()
                .expect("never poisoned: no panics while held");
            for (spec, instances) in &self.specs {
                let waits_on = self.unmet(&spec.service, &shared, &[]);
                if !waits_on.is_empty() {
                    let start = WaitingStart {
                        service: spec.service.clone(),
                        instances: *instances,
                        waits_on,
                        worker: spec.settings.is_worker(),
                    };
                    waiting.insert(spec.id.clone(), start);
                }
            }
        }
        let starts = self
            .specs
            .iter()
            .map(|(spec, instances)| self.start_one(spec, *instances, &shared));
        // A failed dependency or a shutdown ends every start still waiting.
        tokio::select! {
            _ = futures_util::future::join_all(starts) => {}
            () = start_failed.cancelled() => {}
            () = shutdown.cancelled() => {}
        }
        self.live
            .waiting
            .lock()
            .expect("never poisoned: no panics while held")
            .clear();
    }

    /// Waits for each of `spec`'s dependencies, then hands it to the supervisor and says when
    /// it is ready.
    async fn start_one(
        &self,
        spec: &supervisor::DeploymentSpec,
        instances: usize,
        shared: &StartShared<'_>,
    ) {
        let service = &spec.service;
        let dependencies = self.depends_on.get(service).cloned().unwrap_or_default();
        let mut met: Vec<&str> = Vec::new();
        for (dependency, condition) in &dependencies {
            let (Some(dependency_id), Some(handed)) =
                (shared.ids.get(dependency), shared.handed.get(dependency))
            else {
                continue;
            };
            handed.cancelled().await;
            let waited = self
                .wait_for(service, dependency, dependency_id, *condition)
                .await;
            if let Err(error) = waited {
                // Only the first failure is said: the start stops on it.
                if !matches!(error, SupervisorError::Stopped)
                    && !shared.start_failed.is_cancelled()
                    && !shared.shutdown.is_cancelled()
                {
                    let error = dependency_failed(
                        &self.live,
                        service,
                        dependency,
                        dependency_id,
                        *condition,
                        &error,
                    );
                    output::print_error(&error.hint(format!(
                        "{} not started; stopping. See `stack logs {dependency}`.",
                        self.not_started()
                    )));
                    shared.start_failed.cancel();
                }
                return;
            }
            met.push(dependency);
            let waits_on = self.unmet(service, shared, &met);
            if let Some(start) = self.waiting_start(&spec.id).as_mut() {
                start.waits_on = waits_on;
            }
        }
        // A `stack scale` made while it waited counts. Its entry goes only once it is with
        // the supervisor, so that whoever sees it gone finds it there.
        let instances = self
            .waiting_start(&spec.id)
            .as_mut()
            .map_or(instances, |start| start.instances);
        let readiness = if shared.one_shots.contains(service) {
            Readiness::OneShot
        } else if spec.settings.is_worker() {
            Readiness::Worker
        } else {
            Readiness::Web
        };
        let mut deployed = spec.clone();
        deployed.settings.one_shot = readiness == Readiness::OneShot;
        if self
            .live
            .supervisor
            .deploy(deployed, instances)
            .await
            .is_err()
        {
            return;
        }
        let scaled_meanwhile = self
            .waiting_start(&spec.id)
            .take()
            .map(|start| start.instances)
            .filter(|wanted| *wanted != instances);
        if let Some(wanted) = scaled_meanwhile {
            if let Err(error) = self.live.supervisor.scale(&spec.id, wanted).await {
                tracing::warn!(%error, deployment = spec.id, "cannot apply the scale");
            }
        }
        if let Some(handed) = shared.handed.get(service) {
            handed.cancel();
        }
        // What waits for it to be healthy says so when it is not, and the start stops then.
        let said_by_dependents = self.depends_on.iter().any(|(dependent, dependencies)| {
            shared.ids.contains_key(dependent)
                && dependencies.get(service) == Some(&Condition::Healthy)
        });
        tokio::spawn(say_when_ready(
            self.live.clone(),
            spec.id.clone(),
            service.clone(),
            readiness,
            said_by_dependents,
            self.started,
            shared.shutdown.clone(),
        ));
    }

    /// The services still waiting, as a sentence's subject: "`a`, `b` and `d` were".
    fn not_started(&self) -> String {
        let mut services: Vec<String> = self
            .live
            .waiting
            .lock()
            .expect("never poisoned: no panics while held")
            .values()
            .map(|start| format!("`{}`", start.service))
            .collect();
        services.sort();
        match services.as_slice() {
            [one] => format!("{one} was"),
            [first @ .., last] => format!("{} and {last} were", first.join(", ")),
            [] => "nothing else was".to_string(),
        }
    }

    /// What `service` still waits for, `met` aside.
    fn unmet(
        &self,
        service: &str,
        shared: &StartShared<'_>,
        met: &[&str],
    ) -> Vec<(String, Condition)> {
        self.depends_on
            .get(service)
            .into_iter()
            .flatten()
            .filter(|(dependency, _)| {
                shared.ids.contains_key(*dependency) && !met.contains(&dependency.as_str())
            })
            .map(|(dependency, condition)| (dependency.clone(), *condition))
            .collect()
    }

    /// The WAITING entry of `id` (for `stack ls` and the dashboard), to change or take.
    fn waiting_start(&self, id: &str) -> WaitingEntry<'_> {
        WaitingEntry {
            all: self
                .live
                .waiting
                .lock()
                .expect("never poisoned: no panics while held"),
            id: id.to_string(),
        }
    }

    /// Waits for `dependency` as `service` asks; a `completed` wait has no time limit, and
    /// says once, after the ready timeout, that it still waits for a one-shot that still runs.
    async fn wait_for(
        &self,
        service: &str,
        dependency: &str,
        dependency_id: &str,
        condition: Condition,
    ) -> Result<(), SupervisorError> {
        let timeout = self.live.ready_timeout;
        let wait = self
            .live
            .supervisor
            .wait_for(dependency_id, condition, timeout);
        if condition != Condition::Completed {
            return wait.await;
        }
        tokio::pin!(wait);
        tokio::select! {
            waited = &mut wait => return waited,
            () = tokio::time::sleep(timeout) => {}
        }
        output::info(format!(
            "`{service}` still waits for `{dependency}` to complete: it runs for {}s now (`completed` waits as long as it runs; `--ready-timeout` limits only its start)",
            timeout.as_secs()
        ));
        wait.await
    }
}

/// What `> Ready!` waits for and says of a first deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    /// Takes traffic: its URLs.
    Web,
    /// Its `cmd` check passed, or (without one) it runs; or it exited 0 (`restart` not
    /// `always`), said as done.
    Worker,
    /// Others wait for it to complete: said once it exited 0; a failure is said by what waits
    /// for it.
    OneShot,
}

/// `stats` waits for `writer` to be healthy, and what `writer` said instead.
pub(super) fn dependency_failed(
    live: &Live,
    service: &str,
    dependency: &str,
    dependency_id: &str,
    condition: Condition,
    error: &SupervisorError,
) -> CliError {
    let snapshot = live.supervisor.snapshot();
    let deployment = snapshot.resolve(dependency_id);
    let last_check = deployment.and_then(|deployment| {
        deployment
            .instances
            .iter()
            .find_map(|instance| instance.last_check())
    });
    let wanted = match condition {
        Condition::Started => "to start",
        Condition::Healthy => "to become healthy",
        Condition::Completed => "to complete (exit 0)",
    };
    let mut message =
        format!("`{service}` waits for `{dependency}` {wanted}, and it did not: {error}");
    if let Some(check) = last_check.filter(|_| condition == Condition::Healthy) {
        message.push_str(&format!("\nits last health check: {check}"));
    }
    if condition == Condition::Completed && !error.to_string().contains("last lines:") {
        if let Some(deployment) = deployment {
            let lines: Vec<String> = deployment
                .log
                .recent(10, None)
                .into_iter()
                .filter(|line| !line.text.starts_with("[stack]"))
                .map(|line| format!("  {}", line.text))
                .collect();
            if !lines.is_empty() {
                message.push_str(&format!("\nlast lines:\n{}", lines.join("\n")));
            }
        }
    }
    CliError::new(message).hint(format!(
        "`{service}` and what depends on it were not started; stopping. See `stack logs {dependency}`."
    ))
}

/// Prints `> Ready!` once a first deployment takes traffic (a worker: passes its check, or
/// runs), `> Success!` once a one-shot did its work, or why not.
async fn say_when_ready(
    live: Arc<Live>,
    id: String,
    service: String,
    readiness: Readiness,
    said_by_dependents: bool,
    started: Instant,
    shutdown: CancellationToken,
) {
    let waiting = async {
        match readiness {
            Readiness::OneShot => {
                live.supervisor
                    .wait_for(&id, Condition::Completed, live.ready_timeout)
                    .await
            }
            Readiness::Web | Readiness::Worker => {
                live.supervisor.wait_ready(&id, live.ready_timeout).await
            }
        }
    };
    // Stopped while it started (Ctrl-C, `stack down`): nothing to say; its deployment going
    // away is no failure of the service.
    let ready = tokio::select! {
        ready = waiting => ready,
        () = shutdown.cancelled() => return,
    };
    if shutdown.is_cancelled() {
        return;
    }
    let seconds = started.elapsed().as_secs_f64();
    let completed = || {
        live.supervisor
            .snapshot()
            .resolve(&id)
            .is_some_and(|deployment| deployment.state() == DeploymentState::Completed)
    };
    match ready {
        Ok(()) if readiness == Readiness::OneShot => output::success(format!(
            "{id} (one-shot `{service}`) ran and exited 0 [{seconds:.1}s]"
        )),
        Ok(()) if completed() => output::success(format!(
            "{id} (worker `{service}`) ran and exited 0 [{seconds:.1}s]"
        )),
        Ok(()) if readiness == Readiness::Worker => {
            output::ready(format!("{id} (worker `{service}`) [{seconds:.1}s]"))
        }
        Ok(()) => output::ready(format!(
            "{} [{seconds:.1}s]",
            deployment_urls(&id, live.proxy_port, live.https_port),
        )),
        // Stopped, or gone before it was ready (a `stack.toml` save took it out): nothing of
        // it to say.
        Err(SupervisorError::Stopped | SupervisorError::UnknownTarget { .. }) => {}
        // What waits for it says why it did not complete, with its last lines.
        Err(_) if readiness == Readiness::OneShot || said_by_dependents => {}
        Err(error) => output::print_error(&CliError::new(format!("{service}: {error}")).hint(
            format!("The other services keep running. See `stack logs {service}`."),
        )),
    }
}

/// A scale recorded while no `stack up` ran (or by one with a higher `--max-instances`) is
/// held to this run's cap, said once per service.
fn cap_instances(
    specs: Vec<(supervisor::DeploymentSpec, usize)>,
    cap: usize,
) -> Vec<(supervisor::DeploymentSpec, usize)> {
    specs
        .into_iter()
        .map(|(spec, instances)| {
            if instances > cap {
                output::warn(format!(
                    "`{}` was to run {instances} instances, more than `--max-instances {cap}`: it runs {cap}",
                    spec.service
                ));
            }
            (spec, instances.min(cap))
        })
        .collect()
}

fn port_suffix(port: u16) -> String {
    if port == 80 {
        String::new()
    } else {
        format!(":{port}")
    }
}

/// `: `writer` did not compile`, naming what cargo named.
pub(super) fn did_not_compile(failed: &[String]) -> String {
    match failed {
        [] => String::new(),
        names => {
            let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            format!(": {} did not compile", quoted.join(" and "))
        }
    }
}

fn build_error(error: BuildError) -> CliError {
    match error {
        BuildError::CargoFailed { output, failed } => {
            eprint!("{output}");
            CliError::new(format!(
                "the build failed{} (the compiler's output is above)",
                did_not_compile(&failed)
            ))
            .hint("Fix the errors and run `stack up` again. Nothing was started.")
        }
        BuildError::CommandFailed { ref output, .. } => {
            eprint!("{output}");
            CliError::new(format!("{error} (its output is above)"))
                .hint("Fix the build and run `stack up` again. Nothing was started.")
        }
        BuildError::NpmFailed { ref output, .. } => {
            eprint!("{output}");
            CliError::new(error.to_string()).hint("Fix the install and run `stack up` again.")
        }
        BuildError::UnknownService { ref available, .. } => {
            let hint = if available.is_empty() {
                "There are no services: add a directory under `services/`.".to_string()
            } else {
                format!("Services: {}.", available.join(", "))
            };
            CliError::new(error.to_string()).hint(hint)
        }
        BuildError::NoServices { .. } => CliError::new(error.to_string()).hint(
            "A service is a directory under `services/` with a Cargo package that has a binary, or a package.json with a `start` script; or declare one in `stack.toml`. `stack init` writes the demo's.",
        ),
        BuildError::Copy { .. } => CliError::new(error.to_string()).hint(
            "Check the free space and the permissions of `.stack/deployments/`, then run `stack up` again. Nothing was started.",
        ),
        other => CliError::new(other.to_string())
            .hint("A service is a Cargo package with a binary, or a package.json with a `start` script."),
    }
}
