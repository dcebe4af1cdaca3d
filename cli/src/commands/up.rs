//! `stack up`: lock the project, check the environment, build every service, start the managed
//! Redis, the proxy, the control socket and the deployments, print `> Ready!` per service, stream
//! logs, and stop everything (in reverse order, Redis last) on Ctrl-C or `stack down`.
//!
//! The control socket is bound before the first build, so `stack ls` shows the services being
//! built, `stack alias` and `stack scale` made during the build apply at the start (the state
//! is read once the build is done), and `stack down` (like Ctrl-C or SIGTERM) stops a `stack
//! up` that is still building: cargo is killed and a Redis that came up is stopped gracefully.
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
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::args::UpArgs;
use crate::control::{self, AliasChange, Control, ControlContext, ErrorBody};
use crate::env;
use crate::init;
use crate::output::{self, CliError, CliResult};
use crate::proxy::{self, Routing, RoutingTable};
use crate::redis::managed::{self, ManagedRedis};
use crate::redis::ping::{ping, PingOutcome};
use crate::state::deployments::DEPLOYMENTS_DIR;
use crate::state::{self, Alias, State};
use crate::supervisor::build::{self, BuildError, Built};
use crate::supervisor::logs::{self, DeploymentLog, Redactor};
use crate::supervisor::{
    self, process, redeploy, routes, Config, DeploymentSpec, Supervisor, SupervisorError,
};
use session::redis_url::{load_tls_ca_file, RedisUrl};

/// The CA file the services trust a `rediss://` Redis with (the session crate reads it too).
const REDIS_TLS_CA_FILE: &str = "REDIS_TLS_CA_FILE";

/// The variable the services sign cookies with; generated per project when unset.
const SESSION_SECRET: &str = "SESSION_SECRET";

/// Exit code after Ctrl-C (128 + SIGINT), as shells expect.
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code after SIGTERM (128 + SIGTERM).
const EXIT_TERMINATED: u8 = 143;

pub fn run(cwd: &Path, args: UpArgs) -> CliResult<ExitCode> {
    let started = Instant::now();
    let project_dir = cwd.canonicalize().map_err(|error| {
        CliError::new(format!(
            "cannot open the project directory `{}`: {error}",
            cwd.display()
        ))
        .hint("Pass an existing directory with `--cwd`.")
    })?;
    let stack_dir = project_dir.join(state::STATE_DIR);
    std::fs::create_dir_all(&stack_dir).map_err(|error| {
        CliError::new(format!("cannot create `{}`: {error}", stack_dir.display()))
    })?;
    let _lock = control::lock::acquire(&project_dir, &stack_dir).map_err(|error| {
        CliError::new(error.to_string())
            .hint("Use that one (`stack ls`, `stack logs`), or stop it with `stack down` first.")
    })?;
    // Everything below is checked before anything starts.
    let service_env = load_environment(&project_dir, &args)?;
    let leftovers = process::kill_leftovers(&process::pids_dir(&project_dir));
    if !leftovers.is_empty() {
        output::warn(format!(
            "stopped {} process(es) left running by an earlier `stack up` that did not exit cleanly",
            leftovers.len()
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    let code = runtime.block_on(up(project_dir, args, service_env, started));
    // Instance output pumps may still hold pipes; do not wait on them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Caller environment < `.env` < `-e`; every bad line at once, never a value.
fn load_environment(project_dir: &Path, args: &UpArgs) -> CliResult<BTreeMap<String, String>> {
    let mut errors = Vec::new();
    let dotenv = match &args.dotenv {
        Some(file) => {
            if let Some(warning) = init::dotenv_warning(project_dir, file) {
                output::warn(warning);
            }
            let path = if file.is_absolute() {
                file.clone()
            } else {
                project_dir.join(file)
            };
            match env::read_dotenv(&path) {
                Ok(pairs) => pairs,
                Err(env::EnvErrors(found)) => {
                    errors.extend(found);
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };
    let assignments = match env::parse_assignments(&args.env) {
        Ok(pairs) => pairs,
        Err(env::EnvErrors(found)) => {
            errors.extend(found);
            Vec::new()
        }
    };
    if !errors.is_empty() {
        let n_errors = errors.len();
        let message = env::EnvErrors(errors).to_string();
        return Err(CliError::new(format!(
            "the environment has {} ({} shown; values are never printed):\n{message}",
            if n_errors == 1 { "an error".to_string() } else { format!("{n_errors} errors") },
            n_errors
        ))
        .hint("Fix the lines above (`KEY=VALUE`, keys of letters, digits and `_`). Nothing was started."));
    }
    let mut merged = env::merge(env::caller_environment(), [&dotenv, &assignments]);
    // `REDIS_SESSION_URL=` copied from `.env.example` means "manage one for me", not "no Redis".
    if merged
        .get(env::REDIS_SESSION_URL)
        .is_some_and(|url| url.trim().is_empty())
    {
        merged.remove(env::REDIS_SESSION_URL);
    }
    if merged
        .get(SESSION_SECRET)
        .is_none_or(|secret| secret.trim().is_empty())
    {
        let stack_dir = project_dir.join(state::STATE_DIR);
        let (secret, created) = state::secret::load_or_create(&stack_dir).map_err(|error| {
            CliError::new(format!(
                "`SESSION_SECRET` is not set and `{}` cannot be written: {error}",
                state::secret::path(&stack_dir).display()
            ))
            .hint("Set SESSION_SECRET in `.env` (with `--dotenv`) or with `-e SESSION_SECRET=...`.")
        })?;
        output::info(format!(
            "SESSION_SECRET is not set: using the project's {} secret in `{}` (set it in .env to choose your own)",
            if created { "new" } else { "generated" },
            state::secret::path(Path::new(state::STATE_DIR)).display()
        ));
        merged.insert(SESSION_SECRET.to_string(), secret);
    }
    Ok(merged)
}

async fn up(
    project_dir: PathBuf,
    args: UpArgs,
    mut service_env: BTreeMap<String, String>,
    started: Instant,
) -> CliResult<ExitCode> {
    let stack_dir = project_dir.join(state::STATE_DIR);
    let logs_dir = stack_dir.join("logs");
    let pids_dir = process::pids_dir(&project_dir);
    let root = CancellationToken::new();
    std::fs::create_dir_all(&pids_dir).map_err(|error| {
        CliError::new(format!("cannot create `{}`: {error}", pids_dir.display()))
    })?;
    // Lives as long as this process; if it is killed, the guard stops what it started.
    let _guard =
        process::start_guard(&pids_dir).map_err(|error| CliError::new(error.to_string()))?;

    // Signals first: a Ctrl-C during the build must still clean up.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| CliError::new(format!("cannot watch for Ctrl-C: {error}")))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|error| CliError::new(format!("cannot watch for SIGTERM: {error}")))?;

    // The proxy's port is taken before the build, so a busy port fails fast.
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|error| {
            CliError::new(format!("cannot listen on 127.0.0.1:{}: {error}", args.port)).hint(
                "Another program uses that port: pick another with `--port` (0 picks a free one).",
            )
        })?;
    let proxy_port = listener
        .local_addr()
        .map_err(|error| CliError::new(format!("cannot read the proxy's address: {error}")))?
        .port();

    let services = build::discover(&project_dir, &args.services).map_err(build_error)?;

    // The control socket before the build: `stack ls` shows what is building, `stack down`
    // stops it; the other commands hear "still starting" until the services are handed over.
    let down = CancellationToken::new();
    let builds = redeploy::Builds::default();
    let first_build = builds.start(&services);
    let control = Control::starting(project_dir.clone(), down.clone(), builds.clone());
    let socket = control::socket_path(&project_dir);
    let control_listener = control::server::bind(&socket).map_err(|error| {
        CliError::new(format!("cannot listen on `{}`: {error}", socket.display()))
    })?;
    let _socket_file = SocketFile(socket);
    let control_task = tokio::spawn(control::server::serve(
        control_listener,
        control.clone(),
        root.child_token(),
    ));

    let redis_log =
        DeploymentLog::open(&logs_dir, "redis", None, Redactor::default()).map_err(|error| {
            CliError::new(format!("cannot write `{}`: {error}", logs_dir.display()))
        })?;
    // Redis starts while cargo checks the build: neither waits for the other.
    let redis_start = start_redis(&stack_dir, &pids_dir, &service_env, redis_log);
    let build = async {
        let built = build_with_spinner(&project_dir, &services, args.release).await;
        if built.is_ok() {
            let names: Vec<&str> = services
                .iter()
                .map(|service| service.name.as_str())
                .collect();
            output::info(format!(
                "Built {} [{:.1}s]",
                names.join(", "),
                started.elapsed().as_secs_f64()
            ));
        }
        built
    };
    // Both futures borrow the environment: they end with this block.
    let (built, redis) = {
        let mut build = Box::pin(build);
        let mut redis_start = Box::pin(redis_start);
        let (mut built, mut redis) = (None, None);
        while built.is_none() || redis.is_none() {
            tokio::select! {
                done = &mut build, if built.is_none() => built = Some(done),
                done = &mut redis_start, if redis.is_none() => redis = Some(done),
                code = stop_requested(&mut interrupt, &mut terminate, &down) => {
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
                    return Ok(ExitCode::from(code));
                }
            }
        }
        (
            built.expect("the loop ends once built"),
            redis.expect("the loop ends once Redis started"),
        )
    };
    let (built, redis) = match (built, redis) {
        (Ok(built), Ok(redis)) => (built, redis),
        // Nothing of the stack may run after a failed start: stop Redis if it came up.
        (Err(error), Ok(Some(redis))) => {
            redis.stop(supervisor::DEFAULT_GRACE).await;
            return Err(error);
        }
        (Err(error), _) | (Ok(_), Err(error)) => return Err(error),
    };
    if let Some(redis) = &redis {
        service_env.insert(env::REDIS_SESSION_URL.into(), redis.url());
        output::info(format!(
            "Redis ready at {} (managed, data in .stack/{})",
            redis.url(),
            managed::DATA_DIR
        ));
    }

    // Alias and scale changes made during the build are in it; later ones wait for the start.
    let mut state = control
        .load_state()
        .map_err(|error| CliError::new(error.to_string()))?;
    let specs = record_deployments(&project_dir, &mut state, &built, &args)?;

    let redis_url = service_env
        .get(env::REDIS_SESSION_URL)
        .cloned()
        .unwrap_or_default();
    let redactor = Redactor::new(env::secret_values(&service_env));
    let (supervisor, supervisor_task) = Supervisor::start(Config {
        pids_dir,
        logs_dir,
        env: service_env,
        redactor,
        grace: supervisor::DEFAULT_GRACE,
        ready_timeout: supervisor::DEFAULT_READY_TIMEOUT,
        echo_logs: true,
        shutdown: root.child_token(),
    });

    // Routing: rebuilt whole after every change of the supervisor or of the aliases.
    let aliases = Arc::new(Mutex::new(state.aliases.clone()));
    let routing = Routing::new(RoutingTable::new());
    // One current-thread runtime per core on the shared socket (nginx's model): measured
    // cheaper per request than the multi-thread runtime (bench/RESULTS.md, issue 4).
    let proxy_listener = listener
        .into_std()
        .map_err(|error| CliError::new(format!("cannot hand the proxy its socket: {error}")))?;
    let proxy_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let proxy_routing = routing.clone();
    let proxy_shutdown = root.child_token();
    let proxy_task = tokio::task::spawn_blocking(move || {
        if let Err(error) = proxy::run_on_threads(
            proxy_listener,
            proxy_routing,
            proxy::ProxyConfig::default(),
            proxy_threads,
            proxy_shutdown,
        ) {
            tracing::error!(%error, "the proxy stopped");
        }
    });
    output::info(format!("Proxy listening on http://127.0.0.1:{proxy_port}"));
    let routes_task = tokio::spawn(keep_routes_fresh(
        supervisor.clone(),
        routing.clone(),
        aliases.clone(),
        root.child_token(),
    ));

    let state_lock = Arc::new(Mutex::new(()));
    control.started(ControlContext {
        supervisor: supervisor.clone(),
        project_dir: project_dir.clone(),
        proxy_port,
        ready_timeout: supervisor::DEFAULT_READY_TIMEOUT,
        down: down.clone(),
        aliases: alias_applier(
            project_dir.clone(),
            supervisor.clone(),
            routing.clone(),
            aliases.clone(),
            state_lock.clone(),
        ),
        state_lock: state_lock.clone(),
        redis_url,
        builds: builds.clone(),
    });
    drop(first_build);

    for (spec, instances) in specs {
        let id = spec.id.clone();
        let service = spec.service.clone();
        if supervisor.deploy(spec, instances).await.is_err() {
            break;
        }
        let supervisor = supervisor.clone();
        tokio::spawn(async move {
            match supervisor
                // A little longer than an instance's own readiness timeout, so its error
                // (with the last log lines) is what gets printed.
                .wait_ready(
                    &id,
                    supervisor::DEFAULT_READY_TIMEOUT + Duration::from_secs(2),
                )
                .await
            {
                Ok(()) => output::ready(format!(
                    "{} [{:.1}s]",
                    control::deployment_url(&id, proxy_port),
                    started.elapsed().as_secs_f64()
                )),
                Err(SupervisorError::Stopped) => {}
                Err(error) => {
                    output::print_error(&CliError::new(format!("{service}: {error}")).hint(
                        format!("The other services keep running. See `stack logs {service}`."),
                    ))
                }
            }
        });
    }
    for (host, alias) in aliases
        .lock()
        .expect("never poisoned: no panics while held")
        .iter()
    {
        output::info(format!(
            "Alias http://{host}{} -> {}",
            port_suffix(proxy_port),
            alias.source()
        ));
    }

    let watching = if args.no_watch {
        None
    } else {
        start_watching(
            &project_dir,
            &args,
            &services,
            &supervisor,
            proxy_port,
            state_lock,
            builds,
            redis.as_ref().map(ManagedRedis::url),
            &root,
        )
    };

    let code = stop_requested(&mut interrupt, &mut terminate, &down).await;
    output::info("Stopping...");
    let stopping = Instant::now();
    root.cancel();
    if let Some((watcher, redeploy_task)) = watching {
        drop(watcher);
        let _ = tokio::time::timeout(Duration::from_secs(2), redeploy_task).await;
    }
    supervisor.stop().await;
    let _ = supervisor_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(2), routes_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(12), proxy_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), control_task).await;
    if let Some(redis) = redis {
        redis.stop(supervisor::DEFAULT_GRACE).await;
    }
    output::info(format!(
        "Stopped everything [{:.1}s]",
        stopping.elapsed().as_secs_f64()
    ));
    Ok(ExitCode::from(code))
}

/// Every save becomes a deployment (`--no-watch` turns it off); see `supervisor::redeploy`.
#[allow(clippy::too_many_arguments)]
fn start_watching(
    project_dir: &Path,
    args: &UpArgs,
    services: &[build::Service],
    supervisor: &Supervisor,
    proxy_port: u16,
    state_lock: Arc<Mutex<()>>,
    builds: redeploy::Builds,
    managed_redis_url: Option<String>,
    root: &CancellationToken,
) -> Option<(crate::watch::Watcher, tokio::task::JoinHandle<()>)> {
    let dotenv = args.dotenv.as_ref().map(|file| project_dir.join(file));
    let assignments = args.env.clone();
    let reload_env = dotenv.clone().map(|dotenv| {
        Box::new(move || {
            redeploy::reload_environment(&dotenv, &assignments, managed_redis_url.as_deref())
        }) as redeploy::ReloadEnv
    });
    let redeployer = redeploy::Redeployer {
        project_dir: project_dir.to_path_buf(),
        services: services.to_vec(),
        supervisor: supervisor.clone(),
        release: args.release,
        keep: args.keep,
        proxy_port,
        ready_timeout: supervisor::DEFAULT_READY_TIMEOUT,
        state_lock,
        reload_env,
        builds,
    };
    match redeploy::start_watching(redeployer, dotenv, root.child_token()) {
        Ok(watching) => {
            output::info("Watching for changes (every save becomes a new deployment)");
            Some(watching)
        }
        Err(error) => {
            output::print_error(&error);
            None
        }
    }
}

/// What stops `stack up`, as its exit code: Ctrl-C (130), SIGTERM (143) or `stack down` (0).
async fn stop_requested(
    interrupt: &mut Signal,
    terminate: &mut Signal,
    down: &CancellationToken,
) -> u8 {
    tokio::select! {
        _ = interrupt.recv() => EXIT_INTERRUPTED,
        _ = terminate.recv() => EXIT_TERMINATED,
        () = down.cancelled() => 0,
    }
}

/// The control socket's file, removed when `stack up` returns (it still holds the project's
/// lock then, so no other `stack up` has bound a socket of its own in its place).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn port_suffix(port: u16) -> String {
    if port == 80 {
        String::new()
    } else {
        format!(":{port}")
    }
}

/// The managed Redis when `REDIS_SESSION_URL` is unset (else a PING of the user's one).
async fn start_redis(
    stack_dir: &Path,
    pids_dir: &Path,
    service_env: &BTreeMap<String, String>,
    log: DeploymentLog,
) -> CliResult<Option<ManagedRedis>> {
    match service_env.get(env::REDIS_SESSION_URL) {
        Some(url) => {
            check_external_redis(url, service_env.get(REDIS_TLS_CA_FILE).map(String::as_str))
                .await?;
            Ok(None)
        }
        None => ManagedRedis::start(stack_dir, pids_dir, service_env.clone(), log)
            .await
            .map(Some)
            .map_err(|error| CliError::new(error.to_string()).hint(error.hint())),
    }
}

/// Builds with a spinner that shows cargo's latest line; prints the compiler's output on failure.
async fn build_with_spinner(
    project_dir: &Path,
    services: &[build::Service],
    release: bool,
) -> CliResult<Vec<Built>> {
    let names: Vec<&str> = services
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} Building {prefix} {wide_msg}")
            .expect("the template is a fixed, valid string"),
    );
    spinner.set_prefix(names.join(", "));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let progress = {
        let spinner = spinner.clone();
        move |line: &str| spinner.set_message(line.to_string())
    };
    let result = build::build(project_dir, services, release, &progress).await;
    spinner.finish_and_clear();
    result.map_err(build_error)
}

fn build_error(error: BuildError) -> CliError {
    match error {
        BuildError::CargoFailed { output } => {
            eprint!("{output}");
            CliError::new("the build failed (the compiler's output is above)")
                .hint("Fix the errors and run `stack up` again. Nothing was started.")
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
            "A service is a directory under `services/` with a Cargo package that has a binary, or a package.json with a `start` script.",
        ),
        other => CliError::new(other.to_string())
            .hint("A service is a Cargo package with a binary, or a package.json with a `start` script."),
    }
}

/// Turns builds into deployments (reusing the current one when nothing changed), records them
/// in the state with the service's current deployment, prunes old artifacts (`--keep`), and
/// returns what to start with how many instances.
fn record_deployments(
    project_dir: &Path,
    state: &mut State,
    built: &[Built],
    args: &UpArgs,
) -> CliResult<Vec<(DeploymentSpec, usize)>> {
    let deployments_dir = project_dir.join(state::STATE_DIR).join(DEPLOYMENTS_DIR);
    let now = logs::now_ms();
    let mut specs = Vec::new();
    for build in built {
        let name = build.service.name.clone();
        let history = state.deployments.entry(name.clone()).or_default();
        let (record, is_new) =
            build::prepare_deployment(&deployments_dir, build, history, args.release, now)
                .map_err(build_error)?;
        if is_new {
            history.deployments.push(record.clone());
        }
        history.current = Some(record.id.clone());
        redeploy::retain_recent(&deployments_dir, history, args.keep);
        let dir = deployments_dir.join(&record.id);
        let program = if record.kind == "cargo" {
            dir.join(&record.program)
        } else {
            PathBuf::from(&record.program)
        };
        let instances = state.scale.get(&name).copied().unwrap_or(1);
        specs.push((
            DeploymentSpec {
                id: record.id.clone(),
                service: name,
                dir,
                program,
                args: record.args.clone(),
                created_ms: record.created_ms,
                health: record.health.clone(),
            },
            instances,
        ));
    }
    state
        .save(project_dir)
        .map_err(|error| CliError::new(error.to_string()))?;
    Ok(specs)
}

/// PINGs a Redis the user brought; a warning (masked URL) when it does not answer. A URL that
/// does not parse is an error (described, never echoed).
async fn check_external_redis(url: &str, ca_file: Option<&str>) -> CliResult<()> {
    let url = RedisUrl::parse(url).map_err(|error| {
        CliError::new(format!("`REDIS_SESSION_URL` is invalid: {error}")).hint(
            "Use redis://host:6379, redis://:password@host:6379/0, unix:///path/to/redis.sock, or unset it for a managed Redis.",
        )
    })?;
    // A `rediss://` server is trusted as the services will trust it.
    let url = match ca_file.map(str::trim).filter(|path| !path.is_empty()) {
        Some(path) if url.is_tls() => match load_tls_ca_file(Path::new(path)) {
            Ok(pem) => url.with_tls_ca(pem),
            Err(error) => {
                output::warn(format!(
                    "`REDIS_TLS_CA_FILE` is unusable: {error}; the services cannot reach Redis at {url} until it is fixed"
                ));
                return Ok(());
            }
        },
        _ => url,
    };
    match ping(&url, Duration::from_secs(2)).await {
        PingOutcome::Answers => output::info(format!("Redis at {url} (REDIS_SESSION_URL) answers")),
        PingOutcome::Fails(reason) => output::warn(format!(
            "Redis at {url} (REDIS_SESSION_URL) does not answer ({reason}); the services answer 503 until it does"
        )),
    }
    Ok(())
}

/// Rebuilds and swaps the routing table after every supervisor change.
async fn keep_routes_fresh(
    supervisor: Supervisor,
    routing: Routing,
    aliases: Arc<Mutex<BTreeMap<String, Alias>>>,
    shutdown: CancellationToken,
) {
    let mut changes = supervisor.subscribe();
    let mut warned: Vec<String> = Vec::new();
    loop {
        let snapshot = changes.borrow_and_update().clone();
        let built = {
            let aliases = aliases
                .lock()
                .expect("never poisoned: no panics while held");
            routes::build(&snapshot, &aliases)
        };
        routing.swap(built.table);
        for note in built.notes {
            if !warned.contains(&note) {
                output::warn(&note);
                warned.push(note);
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

/// Live alias changes: validated against what runs, saved, and swapped in, all or nothing.
fn alias_applier(
    project_dir: PathBuf,
    supervisor: Supervisor,
    routing: Routing,
    aliases: Arc<Mutex<BTreeMap<String, Alias>>>,
    state_lock: Arc<Mutex<()>>,
) -> control::AliasApplier {
    Arc::new(move |change: &AliasChange| {
        let _guard = state_lock
            .lock()
            .expect("never poisoned: no panics while held");
        let mut aliases = aliases
            .lock()
            .expect("never poisoned: no panics while held");
        let mut candidate = aliases.clone();
        match change {
            AliasChange::Set { host, alias } => {
                candidate.insert(host.clone(), alias.clone());
            }
            AliasChange::Remove { host } => {
                candidate.remove(host);
            }
        }
        let built = routes::build(&supervisor.snapshot(), &candidate);
        let mine: Vec<_> = built
            .unresolved
            .iter()
            .filter(|unresolved| unresolved.host == change.host())
            .collect();
        if !mine.is_empty() {
            let lines: Vec<String> = mine
                .iter()
                .map(|unresolved| unresolved.to_string())
                .collect();
            return Err(ErrorBody::new(
                lines.join("\n"),
                Some("Point each `dest` at a running service or deployment, an alias, or a URL. Nothing was changed.".into()),
            ));
        }
        let mut state =
            State::load(&project_dir).map_err(|error| ErrorBody::new(error.to_string(), None))?;
        change.apply_to(&mut state);
        state
            .save(&project_dir)
            .map_err(|error| ErrorBody::new(error.to_string(), None))?;
        routing.swap(built.table);
        *aliases = candidate;
        Ok(format!("{} applied live", change.host()))
    })
}
