//! `stack.toml`: the optional file at the project's root that declares services of any language
//! (`build`, `run`, `health`, `depends_on`, `kind = "worker"`, ...) and gives detected ones
//! settings by naming them. Without it, discovery under `services/` is exactly what it was.
//! A `Procfile` at the root ([`procfile`]) adds its entries as discovered services.
//!
//! - [`model`]: the typed settings, and the JSON form `stack config --json` prints.
//! - [`parse`]: the file's text to its tables, every error at once with line and column.
//!
//! [`resolve`] merges the file with what discovery finds, checks what needs the whole project
//! (an unknown dependency, a cycle, a service with nothing to run) and orders the services
//! dependencies first. It reads the file and the service directories; it starts nothing.

pub mod model;
pub mod parse;
pub mod procfile;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::{
    Builder, Check, Condition, Health, Kind, ResolvedConfig, ResolvedService, Restart, Setting,
};
use parse::{FileConfig, ServiceTable, Written};

use crate::supervisor::build::{self, ServiceKind, SERVICES_DIR};

/// The file's name, at the project's root.
pub const FILE: &str = "stack.toml";
/// What a process gets between its stop signal and SIGKILL unless `stop_timeout` says.
pub const DEFAULT_STOP_TIMEOUT: Duration = crate::supervisor::DEFAULT_GRACE;

/// A line and column, both counted from 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// Where byte `offset` of `text` is.
    pub fn at(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        Position {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// One thing wrong with a file: `stack.toml` (or the `Procfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: &'static str,
    pub position: Position,
    pub message: String,
}

/// Every error of the file, in file order: `stack.toml:4:7: ...`, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                error.file, error.position.line, error.position.column, error.message
            )?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// For the CLI: `stack.toml has 2 errors:` and each on its own line.
    pub fn to_cli(&self, what_to_do: &str) -> crate::output::CliError {
        let mut files: Vec<String> = self
            .0
            .iter()
            .map(|error| format!("`{}`", error.file))
            .collect();
        files.dedup();
        let (files, verb) = match files.len() {
            1 => (files.remove(0), "has"),
            _ => (files.join(" and "), "have"),
        };
        let count = match self.0.len() {
            1 => "an error".to_string(),
            n => format!("{n} errors"),
        };
        let lines: Vec<String> = self
            .to_string()
            .lines()
            .map(|line| format!("  {line}"))
            .collect();
        crate::output::CliError::new(format!("{files} {verb} {count}:\n{}", lines.join("\n")))
            .hint(what_to_do)
    }
}

/// The file's tables, or `None` when the project has no `stack.toml`.
pub fn load(project_dir: &Path) -> Result<Option<FileConfig>, ConfigErrors> {
    let path = project_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: FILE,
                position: Position { line: 1, column: 1 },
                message: format!("cannot be read: {error}"),
            }]))
        }
    };
    parse::parse(&text).map(Some).map_err(ConfigErrors)
}

/// Reads `stack.toml` (if any) and resolves it against discovery.
pub fn load_resolved(project_dir: &Path) -> Result<ResolvedConfig, ConfigErrors> {
    let file = load(project_dir)?;
    resolve(project_dir, file.as_ref())
}

fn from(position: Position) -> String {
    format!("{FILE}:{}", position.line)
}

fn setting<T: Clone>(written: &Written<T>) -> Setting<T> {
    Setting::new(written.value.clone(), from(written.position))
}

/// The services of the project: every detected one, with the settings `stack.toml` gives it,
/// and every declared one; dependencies first, otherwise by name.
pub fn resolve(
    project_dir: &Path,
    file: Option<&FileConfig>,
) -> Result<ResolvedConfig, ConfigErrors> {
    let detected = build::discover(project_dir, &[]).unwrap_or_default();
    let empty = FileConfig::default();
    let file_config = file.unwrap_or(&empty);
    let mut errors = file_config.errors.clone();
    let from_procfile = match procfile::load(project_dir) {
        Ok(entries) => procfile::services(&procfile::without_conflicts(
            entries,
            &detected,
            &mut errors,
        )),
        Err(procfile_errors) => {
            errors.extend(procfile_errors);
            Vec::new()
        }
    };
    let mut services: BTreeMap<String, ResolvedService> = BTreeMap::new();
    let mut positions: BTreeMap<String, &ServiceTable> = BTreeMap::new();
    for table in &file_config.services {
        positions.insert(table.name.clone(), table);
    }
    for service in &detected {
        if positions.contains_key(&service.name) {
            continue;
        }
        services.insert(service.name.clone(), detected_service(project_dir, service));
    }
    for service in &from_procfile {
        if !positions.contains_key(&service.name) {
            services.insert(service.name.clone(), service.clone());
        }
    }
    for table in &file_config.services {
        match declared_service(project_dir, table, &detected, &from_procfile) {
            Ok(service) => {
                services.insert(table.name.clone(), service);
            }
            Err(error) => errors.extend(error),
        }
    }
    // Declared services with errors are services all the same.
    let names: Vec<&str> = services
        .keys()
        .chain(positions.keys())
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut one_shots = BTreeSet::new();
    for table in &file_config.services {
        for (dependency, condition) in &table.depends_on {
            if !services.contains_key(dependency) && !positions.contains_key(dependency) {
                let hint = parse::did_you_mean(dependency, &names)
                    .map(|hint| format!(", did you mean `{hint}`?"))
                    .unwrap_or_else(|| format!(": this project has {}", quoted(&names)));
                errors.push(ConfigError {
                    file: FILE,
                    position: condition.position,
                    message: format!(
                        "`depends_on` names `{dependency}`, which is not a service{hint}"
                    ),
                });
            }
            if condition.value == Condition::Completed {
                one_shots.insert(dependency.clone());
            }
        }
    }
    for name in &one_shots {
        let (Some(service), Some(table)) = (services.get_mut(name), positions.get(name)) else {
            if let Some(service) = services.get_mut(name) {
                service.restart = Setting::new(Restart::Never, "default (a one-shot)");
            }
            continue;
        };
        match &table.restart {
            Some(restart) if restart.value == Restart::Always => errors.push(ConfigError {
                file: FILE,
                position: restart.position,
                message: format!("`{name}` is waited on to complete (`depends_on ... = \"completed\"`), so it cannot restart `always`: use `never` or `on-failure`"),
            }),
            Some(_) => {}
            None => service.restart = Setting::new(Restart::Never, "default (a one-shot)"),
        }
        if table.instances.as_ref().is_some_and(|n| n.value > 1) {
            errors.push(ConfigError {
                file: FILE,
                position: table
                    .instances
                    .as_ref()
                    .map(|n| n.position)
                    .unwrap_or(table.position),
                message: format!(
                    "`{name}` is a one-shot (others wait for it to complete): it runs one instance"
                ),
            });
        }
    }
    errors.extend(cycles(&file_config.services));
    if !errors.is_empty() {
        errors.sort_by_key(|error| (error.file, error.position));
        errors.dedup();
        return Err(ConfigErrors(errors));
    }
    Ok(ResolvedConfig {
        file: file.map(|_| FILE.to_string()),
        services: start_order(services),
    })
}

fn quoted(names: &[&str]) -> String {
    if names.is_empty() {
        return "no services".into();
    }
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn relative(project_dir: &Path, dir: &Path) -> String {
    let project = project_dir
        .canonicalize()
        .unwrap_or(project_dir.to_path_buf());
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    dir.strip_prefix(&project)
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| dir.display().to_string())
}

fn detected_service(project_dir: &Path, service: &build::Service) -> ResolvedService {
    let builder = match &service.kind {
        ServiceKind::Cargo { package } => Builder::Cargo {
            package: package.clone(),
        },
        ServiceKind::Npm => Builder::Npm,
        ServiceKind::Command { build, run } => Builder::Command {
            build: build.clone(),
            run: run.clone(),
        },
    };
    let path = relative(project_dir, &service.dir);
    ResolvedService {
        name: service.name.clone(),
        path: Setting::new(path.clone(), "detected"),
        builder: Setting::new(builder, "detected"),
        kind: Setting::new(Kind::Web, "default"),
        instances: None,
        env: BTreeMap::new(),
        env_file: None,
        health: service
            .settings
            .health
            .clone()
            .map(|health| Setting::new(health, "detected")),
        depends_on: BTreeMap::new(),
        watch: Setting::new(vec![path], "default"),
        ignore: None,
        stop_signal: Setting::new("SIGTERM".to_string(), "default"),
        stop_timeout: Setting::new(DEFAULT_STOP_TIMEOUT, "default"),
        restart: Setting::new(Restart::Always, "default"),
        build_at: None,
        run_at: None,
    }
}

fn declared_service(
    project_dir: &Path,
    table: &ServiceTable,
    detected: &[build::Service],
    from_procfile: &[ResolvedService],
) -> Result<ResolvedService, Option<ConfigError>> {
    let path = match &table.path {
        Some(path) => setting(path),
        None => Setting::new(format!("{SERVICES_DIR}/{}", table.name), "default"),
    };
    let dir = project_dir.join(&path.value);
    let dir_canonical = dir.canonicalize().ok();
    let found = detected.iter().find(|service| {
        dir_canonical.is_some() && service.dir.canonicalize().ok() == dir_canonical
    });
    // A `Procfile` entry named without a `path` of its own keeps what the Procfile says.
    let in_procfile = from_procfile
        .iter()
        .find(|service| table.path.is_none() && service.name == table.name);
    let mut service = match (in_procfile, found) {
        (Some(entry), _) => entry.clone(),
        (None, Some(found)) => {
            let mut service = detected_service(project_dir, found);
            service.name = table.name.clone();
            service.path = path.clone();
            service.watch = Setting::new(vec![path.value.clone()], "default");
            service
        }
        (None, None) => {
            let Some(run) = &table.run else {
                if table.bad_run {
                    // Its `run` has an error of its own; "has no `run`" would be a second one.
                    return Err(None);
                }
                let why = if dir.is_dir() {
                    format!("stack cannot tell how to run `{}` (no Cargo package with a binary, no package.json with a `start` script)", path.value)
                } else {
                    format!("`{}` does not exist", path.value)
                };
                return Err(Some(ConfigError {
                    file: FILE,
                    position: table.position,
                    message: format!("`services.{}` has no `run`, and {why}: add `run = \"...\"` (and `path` if it lives elsewhere)", table.name),
                }));
            };
            if !dir.is_dir() {
                let position = table
                    .path
                    .as_ref()
                    .map_or(table.position, |path| path.position);
                return Err(Some(ConfigError {
                    file: FILE,
                    position,
                    message: format!("`{}` is not a directory: create it or set `path` to the service's directory", path.value),
                }));
            }
            ResolvedService {
                name: table.name.clone(),
                path: path.clone(),
                builder: Setting::new(
                    Builder::Command {
                        build: None,
                        run: run.value.clone(),
                    },
                    from(run.position),
                ),
                kind: Setting::new(Kind::Web, "default"),
                instances: None,
                env: BTreeMap::new(),
                env_file: None,
                health: None,
                depends_on: BTreeMap::new(),
                watch: Setting::new(vec![path.value.clone()], "default"),
                ignore: None,
                stop_signal: Setting::new("SIGTERM".to_string(), "default"),
                stop_timeout: Setting::new(DEFAULT_STOP_TIMEOUT, "default"),
                restart: Setting::new(Restart::Always, "default"),
                build_at: None,
                run_at: None,
            }
        }
    };
    // `run` (and `build`) given for a detected directory: the file's word wins.
    let at = |position: Position| format!("{FILE}:{}:{}", position.line, position.column);
    if let Some(build) = &table.build {
        service.build_at = Some(at(build.position));
    }
    if let Some(run) = &table.run {
        service.run_at = Some(at(run.position));
        let build = table.build.as_ref().map(|build| build.value.clone());
        service.builder = Setting::new(
            Builder::Command {
                build,
                run: run.value.clone(),
            },
            from(run.position),
        );
    } else if let Some(build) = &table.build {
        if let Builder::Command { build: slot, .. } = &mut service.builder.value {
            *slot = Some(build.value.clone());
        } else {
            return Err(Some(ConfigError {
                file: FILE,
                position: build.position,
                message: format!(
                    "`build` replaces how stack builds `{}`, so it needs a `run` too",
                    table.name
                ),
            }));
        }
    }
    if let Some(kind) = &table.kind {
        service.kind = setting(kind);
    }
    if let Some(instances) = &table.instances {
        service.instances = Some(setting(instances));
    }
    service.env = table
        .env
        .iter()
        .map(|(key, value)| (key.clone(), setting(value)))
        .collect();
    if let Some(env_file) = &table.env_file {
        if !dir.join(&env_file.value).is_file() && !project_dir.join(&env_file.value).is_file() {
            return Err(Some(ConfigError {
                file: FILE,
                position: env_file.position,
                message: format!(
                    "`env_file` `{}` is not a file (in `{}` or the project)",
                    env_file.value, path.value
                ),
            }));
        }
        service.env_file = Some(setting(env_file));
    }
    if let Some(health) = &table.health {
        service.health = Some(setting(health));
    }
    if service.kind.value == Kind::Worker {
        if let Some(health) = &service.health {
            if matches!(health.value.check, Check::Http(_) | Check::Tcp) {
                let position = table
                    .health
                    .as_ref()
                    .map_or(table.position, |health| health.position);
                return Err(Some(ConfigError {
                    file: FILE,
                    position,
                    message: format!("`{}` is a worker (no `PORT`), so its health cannot be `http` or `tcp`: use `cmd = \"...\"` or leave `health` out", table.name),
                }));
            }
        }
    }
    // What a Procfile entry waits for (its `release`) stays unless the table says otherwise.
    if !table.depends_on.is_empty() || in_procfile.is_none() {
        service.depends_on = table
            .depends_on
            .iter()
            .map(|(name, condition)| (name.clone(), setting(condition)))
            .collect();
    }
    if let Some(watch) = &table.watch {
        service.watch = setting(watch);
    }
    if let Some(ignore) = &table.ignore {
        service.ignore = Some(setting(ignore));
    }
    if let Some(signal) = &table.stop_signal {
        service.stop_signal = setting(signal);
    }
    if let Some(timeout) = &table.stop_timeout {
        service.stop_timeout = setting(timeout);
    }
    if let Some(restart) = &table.restart {
        service.restart = setting(restart);
    }
    Ok(service)
}

/// Each cycle of `depends_on`, named in order: `a -> b -> a`.
fn cycles(tables: &[ServiceTable]) -> Vec<ConfigError> {
    let edges: BTreeMap<&str, Vec<&str>> = tables
        .iter()
        .map(|table| {
            (
                table.name.as_str(),
                table.depends_on.keys().map(String::as_str).collect(),
            )
        })
        .collect();
    let mut errors = Vec::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for table in tables {
        let mut path = vec![table.name.as_str()];
        find_cycles(&edges, &mut path, &mut |cycle| {
            // One report per cycle, whichever service it was found from.
            let mut key: Vec<&str> = cycle[..cycle.len() - 1].to_vec();
            key.sort_unstable();
            if !reported.insert(key) || cycle[0] != table.name {
                return;
            }
            let position = table
                .depends_on
                .get(cycle[1])
                .map_or(table.position, |condition| condition.position);
            errors.push(ConfigError {
                file: FILE,
                position,
                message: format!("`depends_on` makes a cycle: {}; no order can start them: remove one of these dependencies", cycle.join(" -> ")),
            });
        });
    }
    errors
}

fn find_cycles<'a>(
    edges: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
    found: &mut dyn FnMut(&[&'a str]),
) {
    let last = *path.last().expect("a path starts with one service");
    for next in edges.get(last).into_iter().flatten() {
        if *next == path[0] {
            path.push(next);
            found(path);
            path.pop();
        } else if !path.contains(next) {
            path.push(next);
            find_cycles(edges, path, found);
            path.pop();
        }
    }
}

/// Dependencies first (Kahn's order), ties by name. Called once cycles are ruled out.
fn start_order(mut services: BTreeMap<String, ResolvedService>) -> Vec<ResolvedService> {
    let mut ordered = Vec::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    while !services.is_empty() {
        let next = services
            .iter()
            .find(|(_, service)| {
                service.depends_on.keys().all(|dependency| {
                    started.contains(dependency) || !services.contains_key(dependency)
                })
            })
            .map(|(name, _)| name.clone());
        let Some(name) = next else {
            // Unreachable after the cycle check; never loop forever all the same.
            ordered.extend(std::mem::take(&mut services).into_values());
            break;
        };
        let service = services.remove(&name).expect("found just above");
        started.insert(name);
        ordered.push(service);
    }
    ordered
}

/// The file `env_file` names: in the service's directory, else in the project.
fn env_file(service: &ResolvedService, project_dir: &Path) -> Option<PathBuf> {
    let name = &service.env_file.as_ref()?.value;
    let in_service = project_dir.join(&service.path.value).join(name);
    Some(if in_service.is_file() {
        in_service
    } else {
        project_dir.join(name)
    })
}

/// A resolved service's runtime settings for the supervisor.
pub fn run_settings(
    service: &ResolvedService,
    project_dir: &Path,
) -> Result<crate::supervisor::RunSettings, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(file) = env_file(service, project_dir) {
        let pairs = crate::env::read_dotenv(&file).map_err(|errors| errors.to_string())?;
        env.extend(pairs);
    }
    env.extend(
        service
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.value.clone())),
    );
    let stop_signal = service
        .stop_signal
        .value
        .parse()
        .unwrap_or(nix::sys::signal::Signal::SIGTERM);
    Ok(crate::supervisor::RunSettings {
        kind: service.kind.value,
        health: service.health.as_ref().map(|health| health.value.clone()),
        env,
        stop_signal,
        stop_timeout: service.stop_timeout.value,
        restart: service.restart.value,
        one_shot: false,
    })
}

/// The default health of a detected service, from its manifest's `health = "/healthz"`.
pub fn detected_health(path: Option<String>) -> Option<Health> {
    path.map(|path| Health::new(Check::Http(path)))
}

/// Why the services to start cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Build(#[from] build::BuildError),
    #[error("`{service}`'s `env_file`: {reason}")]
    EnvFile { service: String, reason: String },
}

/// The services to start, dependencies first: those named (with what they depend on), or all.
/// A name may be a path (`./api`) as before; a path outside `stack.toml` is detected.
pub fn services(
    project_dir: &Path,
    resolved: &ResolvedConfig,
    requested: &[String],
) -> Result<Vec<build::Service>, ServicesError> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut by_path = Vec::new();
    // `./services/web` names the declared service whose `path` it is, as `web` does.
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    for name in requested {
        let looks_like_path = name.contains('/') || name.starts_with('.');
        let declared_at = looks_like_path
            .then(|| {
                resolved.services.iter().find(|service| {
                    same_dir(
                        &project_dir.join(name),
                        &project_dir.join(&service.path.value),
                    )
                })
            })
            .flatten();
        if let Some(service) = declared_at {
            add_with_dependencies(resolved, &service.name.clone(), &mut wanted);
            continue;
        }
        match resolved
            .services
            .iter()
            .find(|service| &service.name == name)
        {
            Some(_) if !looks_like_path => add_with_dependencies(resolved, name, &mut wanted),
            _ if looks_like_path => {
                by_path.extend(build::discover(project_dir, std::slice::from_ref(name))?)
            }
            _ => {
                return Err(build::BuildError::UnknownService {
                    name: name.clone(),
                    dir: project_dir.join(SERVICES_DIR).display().to_string(),
                    available: resolved
                        .services
                        .iter()
                        .map(|service| service.name.clone())
                        .collect(),
                }
                .into())
            }
        }
    }
    if requested.is_empty() && resolved.services.is_empty() {
        return Err(build::BuildError::NoServices {
            dir: project_dir.join(SERVICES_DIR).display().to_string(),
        }
        .into());
    }
    let mut services = Vec::new();
    for service in &resolved.services {
        if !requested.is_empty() && !wanted.contains(&service.name) {
            continue;
        }
        let settings =
            run_settings(service, project_dir).map_err(|reason| ServicesError::EnvFile {
                service: service.name.clone(),
                reason,
            })?;
        let kind = match &service.builder.value {
            Builder::Cargo { package } => ServiceKind::Cargo {
                package: package.clone(),
            },
            Builder::Npm => ServiceKind::Npm,
            Builder::Command { build, run } => ServiceKind::Command {
                build: build.clone(),
                run: run.clone(),
            },
        };
        services.push(build::Service {
            name: service.name.clone(),
            dir: project_dir.join(&service.path.value),
            kind,
            settings,
            instances: service.instances.as_ref().map(|instances| instances.value),
            depends_on: service
                .depends_on
                .iter()
                .map(|(name, condition)| (name.clone(), condition.value))
                .collect(),
            watch: if service.watch.from.starts_with(FILE) {
                service.watch.value.clone()
            } else {
                Vec::new()
            },
            ignore: service
                .ignore
                .as_ref()
                .map(|ignore| ignore.value.clone())
                .unwrap_or_default(),
            env_file: env_file(service, project_dir),
            build_at: service.build_at.clone(),
            run_at: service.run_at.clone(),
        });
    }
    for service in by_path {
        if services
            .iter()
            .any(|other: &build::Service| other.name == service.name)
        {
            return Err(build::BuildError::DuplicateName { name: service.name }.into());
        }
        services.push(service);
    }
    Ok(services)
}

fn add_with_dependencies(resolved: &ResolvedConfig, name: &str, wanted: &mut BTreeSet<String>) {
    if !wanted.insert(name.to_string()) {
        return;
    }
    if let Some(service) = resolved
        .services
        .iter()
        .find(|service| service.name == name)
    {
        for dependency in service.depends_on.keys() {
            add_with_dependencies(resolved, dependency, wanted);
        }
    }
}

/// Every service's name, detected and declared, sorted (with a bad `stack.toml`, the detected
/// ones: commands that only need names do not fail on it).
pub fn service_names(project_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match load_resolved(project_dir) {
        Ok(resolved) => resolved
            .services
            .into_iter()
            .map(|service| service.name)
            .collect(),
        Err(_) => build::discover(project_dir, &[])
            .map(|services| services.into_iter().map(|service| service.name).collect())
            .unwrap_or_default(),
    };
    names.sort();
    names
}
