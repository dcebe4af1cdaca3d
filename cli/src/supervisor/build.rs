//! From source directories to deployments: find the services of a project, build every Cargo
//! service with ONE cargo invocation (artifact paths from `--message-format=json`), install npm
//! dependencies when `node_modules` is missing, and copy each artifact into
//! `.stack/deployments/<id>/` so that a later build never changes a running deployment.
//!
//! Builds run cargo and npm through [`process::spawn_tool`]: not services to supervise (they
//! finish), but each in a process group of its own, killed whole when the build is abandoned
//! (Ctrl-C, `stack down`, a newer save), so no rustc or build script outlives it. Starting
//! deployments is the supervisor's job, not this module's.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::UNIX_EPOCH;

use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::config::model::{Check, CommandLine, Condition};
use crate::state::deployments::{DeploymentRecord, ServiceHistory};
use crate::supervisor::{process, RunSettings};

/// Where services live in a project.
pub const SERVICES_DIR: &str = "services";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no service named `{name}` in `{dir}`")]
    UnknownService {
        name: String,
        dir: String,
        available: Vec<String>,
    },
    #[error("`{path}` is not a service (no Cargo package with a binary, no package.json with a `start` script)")]
    NotAService { path: String },
    #[error("no services found under `{dir}`")]
    NoServices { dir: String },
    #[error("two services are named `{name}`")]
    DuplicateName { name: String },
    #[error("cannot run `{program}`: {source}")]
    Run { program: String, source: io::Error },
    #[error("the build failed")]
    CargoFailed {
        output: String,
        /// The crates cargo named as not compiling.
        failed: Vec<String>,
    },
    #[error("cargo built no binary for `{service}`")]
    NoBinary { service: String },
    #[error("`{command}` failed in `{dir}`")]
    NpmFailed {
        command: String,
        dir: String,
        output: String,
    },
    #[error("`{command}` failed in `{dir}` ({status})")]
    CommandFailed {
        command: String,
        dir: String,
        status: String,
        output: String,
    },
    #[error("cannot prepare `{path}`: {source}")]
    Copy { path: String, source: io::Error },
}

/// How a service is built and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A Cargo package with a binary; `package` is its name in Cargo.toml.
    Cargo { package: String },
    /// A directory with `package.json` and a `start` script.
    Npm,
    /// Declared in `stack.toml`: `build` (optional) runs in the directory before each
    /// deployment, `run` starts an instance in the deployment's copy of it.
    Command {
        build: Option<CommandLine>,
        run: CommandLine,
    },
}

/// A directory that can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The directory name: `writer`.
    pub name: String,
    pub dir: PathBuf,
    pub kind: ServiceKind,
    /// How its instances run: kind, health check, environment, stop and restart. Detected
    /// services get a health path from `[package.metadata.stack] health = "/healthz"` in
    /// Cargo.toml or `"stack": {"health": "/healthz"}` in package.json; `stack.toml` may say
    /// more.
    pub settings: RunSettings,
    /// `instances` of `stack.toml`: the scale when `stack scale` recorded none.
    pub instances: Option<usize>,
    /// What must be started, healthy or completed before this one starts.
    pub depends_on: BTreeMap<String, Condition>,
    /// `watch` globs of stack.toml, relative to the project (empty: the directory and, for
    /// Cargo, its path dependencies).
    pub watch: Vec<String>,
    /// `ignore` globs of stack.toml, relative to the project.
    pub ignore: Vec<String>,
    /// The file `env_file` of stack.toml names (its variables are in `settings.env`).
    pub env_file: Option<PathBuf>,
    /// Where its `build` and `run` are written (`stack.toml:4:7`, `Procfile:2:6`), for the
    /// errors about them.
    pub build_at: Option<String>,
    pub run_at: Option<String>,
}

impl Service {
    /// The programs its declared `build` and `run` name (`python3`, `go`), which must be on
    /// PATH; none for a detected service (cargo and npm are checked as tools).
    pub fn programs(&self) -> Vec<String> {
        let mut programs: Vec<String> = Vec::new();
        if let ServiceKind::Command { build, run } = &self.kind {
            for command in build.iter().chain([run]) {
                for program in command.programs() {
                    if !programs.contains(&program) {
                        programs.push(program);
                    }
                }
            }
        }
        programs
    }

    /// Where the command naming `program` is written (its `run`, else its `build`).
    pub fn where_it_names(&self, program: &str) -> Option<&str> {
        let ServiceKind::Command { build, run } = &self.kind else {
            return None;
        };
        let names = |command: &CommandLine| command.programs().iter().any(|p| p == program);
        if names(run) {
            self.run_at.as_deref()
        } else if build.as_ref().is_some_and(names) {
            self.build_at.as_deref()
        } else {
            None
        }
    }

    /// (service, program) for every program the declared services of `services` run, which
    /// [`crate::prerequisites::missing_programs`] checks against PATH.
    pub fn programs_of(services: &[Service]) -> Vec<(String, String)> {
        services
            .iter()
            .flat_map(|service| {
                service
                    .programs()
                    .into_iter()
                    .map(|program| (service.name.clone(), program))
            })
            .collect()
    }

    /// A detected service with the default settings.
    fn detected(name: String, dir: PathBuf, kind: ServiceKind, health: Option<String>) -> Self {
        Service {
            name,
            dir,
            kind,
            settings: RunSettings {
                health: crate::config::detected_health(health),
                ..RunSettings::default()
            },
            instances: None,
            depends_on: BTreeMap::new(),
            watch: Vec::new(),
            ignore: Vec::new(),
            env_file: None,
            build_at: None,
            run_at: None,
        }
    }

    /// The HTTP path of its health check, if that is its check (recorded with a deployment).
    pub fn health_path(&self) -> Option<String> {
        match &self.settings.health.as_ref()?.check {
            Check::Http(path) => Some(path.clone()),
            _ => None,
        }
    }
}

/// Finds the services to start: those named (by name under `services/`, or by path), or
/// every runnable directory under `services/` when none is named.
pub fn discover(project: &Path, requested: &[String]) -> Result<Vec<Service>, BuildError> {
    let services_dir = project.join(SERVICES_DIR);
    let mut services = Vec::new();
    if requested.is_empty() {
        let mut entries: Vec<PathBuf> = fs::read_dir(&services_dir)
            .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
            .unwrap_or_default();
        entries.sort();
        services.extend(entries.iter().filter_map(|dir| inspect(dir)));
        if services.is_empty() {
            return Err(BuildError::NoServices {
                dir: services_dir.display().to_string(),
            });
        }
    } else {
        for wanted in requested {
            let looks_like_path = wanted.contains('/') || wanted.starts_with('.');
            let dir = if looks_like_path {
                project.join(wanted)
            } else {
                services_dir.join(wanted)
            };
            match inspect(&dir) {
                Some(service) => services.push(service),
                None if looks_like_path => {
                    return Err(BuildError::NotAService {
                        path: wanted.clone(),
                    })
                }
                None => {
                    let available = discover(project, &[])
                        .map(|all| all.into_iter().map(|service| service.name).collect())
                        .unwrap_or_default();
                    return Err(BuildError::UnknownService {
                        name: wanted.clone(),
                        dir: services_dir.display().to_string(),
                        available,
                    });
                }
            }
        }
    }
    for (index, service) in services.iter().enumerate() {
        if services[..index]
            .iter()
            .any(|other| other.name == service.name)
        {
            return Err(BuildError::DuplicateName {
                name: service.name.clone(),
            });
        }
    }
    Ok(services)
}

/// What kind of service `dir` is, if any.
fn inspect(dir: &Path) -> Option<Service> {
    let name = dir.canonicalize().ok()?.file_name()?.to_str()?.to_string();
    if let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) {
        let has_binary = dir.join("src/main.rs").is_file()
            || dir.join("src/bin").is_dir()
            || manifest.contains("[[bin]]");
        let package = package_name(&manifest)?;
        return has_binary.then(|| {
            Service::detected(
                name,
                dir.to_path_buf(),
                ServiceKind::Cargo { package },
                toml_string(&manifest, "[package.metadata.stack]", "health"),
            )
        });
    }
    let package_json = fs::read_to_string(dir.join("package.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&package_json).ok()?;
    value["scripts"]["start"].as_str()?;
    Some(Service::detected(
        name,
        dir.to_path_buf(),
        ServiceKind::Npm,
        value["stack"]["health"].as_str().map(str::to_string),
    ))
}

/// `name = "..."` inside `[package]`.
fn package_name(manifest: &str) -> Option<String> {
    toml_string(manifest, "[package]", "name")
}

/// A `key = "value"` line inside `section` (a full TOML parser is not needed for two keys).
fn toml_string(manifest: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(rest) = line.strip_prefix(key) else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        return Some(value.trim().trim_matches(['"', '\'']).to_string());
    }
    None
}

/// What a build reports as it goes, for a progress bar or periodic lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// cargo finished a compilation unit: `done` of about `total` (once known), `unit` the
    /// crate it was.
    Compiled {
        done: usize,
        total: Option<usize>,
        unit: &'a str,
    },
    /// A line of what a build tool says (cargo's status, npm's output).
    Said(&'a str),
}

/// A built service, ready to become a deployment.
#[derive(Debug, Clone)]
pub struct Built {
    pub service: Service,
    /// The cargo executable, or the service directory for npm.
    pub artifact: PathBuf,
    /// The build output and what runs it ([`Built::new`]): equal only when a deployment of
    /// it would run the same thing.
    pub fingerprint: String,
}

impl Built {
    /// `artifact_fingerprint` (the executable's, or the tree's) joined with what the service
    /// runs and how: its `run`, `build`, kind, health, environment and stop and restart
    /// settings. A `stack up` after `run` changed in `stack.toml` while nothing ran makes a
    /// new deployment, as the same save does while `stack up` runs; only an unchanged
    /// deployment is reused.
    fn new(service: &Service, artifact: PathBuf, artifact_fingerprint: String) -> Built {
        let mut hasher = DefaultHasher::new();
        // Debug text: `Signal` and `Health` have no `Hash`, and a changed text after an
        // upgrade of stack costs only one new deployment.
        format!("{:?}", (&service.kind, &service.settings)).hash(&mut hasher);
        Built {
            service: service.clone(),
            artifact,
            fingerprint: format!("{artifact_fingerprint}+{:016x}", hasher.finish()),
        }
    }
}

/// Builds every service: one cargo invocation for all Cargo services, `npm ci`/`npm install`
/// where `node_modules` is missing. `progress` hears about each compiled unit and each line
/// the tools print.
pub async fn build(
    project: &Path,
    services: &[Service],
    release: bool,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<Built>, BuildError> {
    let cargo_services: Vec<&Service> = services
        .iter()
        .filter(|service| matches!(service.kind, ServiceKind::Cargo { .. }))
        .collect();
    let mut executables = Vec::new();
    if !cargo_services.is_empty() {
        executables = cargo_build(project, &cargo_services, release, progress).await?;
    }
    let mut built = Vec::new();
    for service in services {
        match &service.kind {
            ServiceKind::Cargo { .. } => {
                let manifest_dir = service.dir.canonicalize().unwrap_or(service.dir.clone());
                let executable = executables
                    .iter()
                    .find(|(dir, _)| *dir == manifest_dir)
                    .map(|(_, executable)| executable.clone())
                    .ok_or_else(|| BuildError::NoBinary {
                        service: service.name.clone(),
                    })?;
                let fingerprint =
                    file_fingerprint(&executable).map_err(|source| BuildError::Copy {
                        path: executable.display().to_string(),
                        source,
                    })?;
                built.push(Built::new(service, executable, fingerprint));
            }
            ServiceKind::Command { build, .. } => {
                if let Some(build) = build {
                    progress(Progress::Said(&format!("{build} ({})", service.name)));
                    run_build_command(project, &service.dir, build, progress).await?;
                }
                built.push(Built::new(
                    service,
                    service.dir.clone(),
                    tree_fingerprint(&service.dir),
                ));
            }
            ServiceKind::Npm => {
                progress(Progress::Said(&format!("npm install ({})", service.name)));
                npm_install(project, &service.dir, progress).await?;
                built.push(Built::new(
                    service,
                    service.dir.clone(),
                    tree_fingerprint(&service.dir),
                ));
            }
        }
    }
    Ok(built)
}

/// Runs cargo once for all packages and returns (package directory, executable) pairs.
async fn cargo_build(
    project: &Path,
    services: &[&Service],
    release: bool,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Vec<(PathBuf, PathBuf)>, BuildError> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .arg("build")
        .arg("--message-format=json-render-diagnostics");
    if release {
        command.arg("--release");
    }
    // One workspace at the project root builds every package in one go; otherwise (a 2017-style
    // repository with `./writer` and `./reader`) cargo is pointed at the first manifest and the
    // others are named, which works when they share a workspace.
    if !project.join("Cargo.toml").is_file() {
        command
            .arg("--manifest-path")
            .arg(services[0].dir.join("Cargo.toml"));
    }
    for service in services {
        if let ServiceKind::Cargo { package } = &service.kind {
            command.arg("-p").arg(package);
        }
    }
    command
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, _group) =
        process::spawn_tool(&mut command, "cargo build", &process::pids_dir(project)).map_err(
            |source| BuildError::Run {
                program: "cargo".into(),
                source,
            },
        )?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    // How many units the build has, from the dependency graph: known a moment after the build
    // starts, shown once known.
    let total = std::sync::OnceLock::new();
    let estimate = async {
        if let Some(units) = estimate_units(project, services).await {
            let _ = total.set(units);
        }
    };
    let read_messages = async {
        let mut executables = Vec::new();
        let mut done = 0;
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            done += 1;
            progress(Progress::Compiled {
                done,
                total: total.get().copied().map(|total: usize| total.max(done)),
                unit: message["target"]["name"].as_str().unwrap_or_default(),
            });
            let (Some(executable), Some(manifest)) = (
                message["executable"].as_str(),
                message["manifest_path"].as_str(),
            ) else {
                continue;
            };
            let is_bin = message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
            if !is_bin {
                continue;
            }
            let dir = Path::new(manifest)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            executables.push((dir, PathBuf::from(executable)));
        }
        executables
    };
    let read_errors = async {
        let mut output = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let status = line.trim();
            if !status.is_empty() {
                progress(Progress::Said(status));
            }
            output.push_str(&line);
            output.push('\n');
        }
        output
    };
    let ((), executables, output) = tokio::join!(estimate, read_messages, read_errors);
    let status = child.wait().await.map_err(|source| BuildError::Run {
        program: "cargo".into(),
        source,
    })?;
    if !status.success() {
        let failed = failed_crates(&output);
        return Err(BuildError::CargoFailed { output, failed });
    }
    Ok(executables)
}

/// The crates cargo says it could not compile (`error: could not compile `writer` ...`).
fn failed_crates(output: &str) -> Vec<String> {
    let mut crates: Vec<String> = output
        .lines()
        .filter_map(|line| line.split("could not compile `").nth(1))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_string)
        .collect();
    crates.dedup();
    crates
}

/// About how many compilation units building `services` takes: every library, build script
/// and binary the packages and their (non-dev) dependencies have, from `cargo metadata`.
/// `None` when cargo cannot say (offline, a broken manifest): the build reports it then.
async fn estimate_units(project: &Path, services: &[&Service]) -> Option<usize> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["metadata", "--format-version", "1", "--offline"]);
    if !project.join("Cargo.toml").is_file() {
        command
            .arg("--manifest-path")
            .arg(services.first()?.dir.join("Cargo.toml"));
    }
    command
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let (child, _group) =
        process::spawn_tool(&mut command, "cargo metadata", &process::pids_dir(project)).ok()?;
    let output = child.wait_with_output().await.ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let wanted: Vec<&str> = services
        .iter()
        .filter_map(|service| match &service.kind {
            ServiceKind::Cargo { package } => Some(package.as_str()),
            ServiceKind::Npm | ServiceKind::Command { .. } => None,
        })
        .collect();
    count_units(&metadata, &wanted)
}

/// The units of the packages named `roots` and everything they build with.
fn count_units(metadata: &serde_json::Value, roots: &[&str]) -> Option<usize> {
    use std::collections::{BTreeMap, BTreeSet};
    let packages: BTreeMap<&str, &serde_json::Value> = metadata["packages"]
        .as_array()?
        .iter()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()?
        .iter()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let mut todo: Vec<&str> = packages
        .iter()
        .filter(|(_, package)| roots.contains(&package["name"].as_str().unwrap_or_default()))
        .map(|(id, _)| *id)
        .collect();
    let mut seen = BTreeSet::new();
    let mut units = 0;
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let is_root = roots.contains(&packages.get(id)?["name"].as_str().unwrap_or_default());
        for target in packages.get(id)?["targets"].as_array()? {
            let kinds = target["kind"].as_array()?;
            let counts = kinds.iter().any(|kind| {
                let kind = kind.as_str().unwrap_or_default();
                matches!(kind, "lib" | "rlib" | "proc-macro" | "custom-build")
                    || (is_root && kind == "bin")
            });
            units += usize::from(counts);
        }
        for dep in nodes.get(id)?["deps"].as_array()? {
            let not_dev_only = dep["dep_kinds"]
                .as_array()
                .is_none_or(|kinds| kinds.iter().any(|kind| kind["kind"] != "dev"));
            if not_dev_only {
                todo.extend(dep["pkg"].as_str());
            }
        }
    }
    Some(units)
}

async fn npm_install(
    project: &Path,
    dir: &Path,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(), BuildError> {
    if dir.join("node_modules").is_dir() || !has_dependencies(dir) {
        return Ok(());
    }
    let subcommand = if dir.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    let run_error = |source| BuildError::Run {
        program: "npm".into(),
        source,
    };
    let mut command = Command::new("npm");
    command.arg(subcommand).current_dir(dir);
    let label = format!("npm {subcommand}");
    let (status, output) = run_tool(project, &mut command, &label, progress)
        .await
        .map_err(run_error)?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::NpmFailed {
        command: label,
        dir: dir.display().to_string(),
        output,
    })
}

/// Runs a build tool in a process group of its own; every line it prints goes to the progress
/// (its last one shows beside the spinner) and is kept, stdout then stderr, for the error.
async fn run_tool(
    project: &Path,
    command: &mut Command,
    label: &str,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> std::io::Result<(std::process::ExitStatus, String)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, _group) = process::spawn_tool(command, label, &process::pids_dir(project))?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let (out, err) = tokio::join!(
        collect_lines(Box::new(stdout), progress),
        collect_lines(Box::new(stderr), progress)
    );
    let status = child.wait().await?;
    Ok((status, format!("{out}{err}")))
}

/// Runs a declared service's `build` in its directory; its output goes to the progress and,
/// when it fails, into the error.
async fn run_build_command(
    project: &Path,
    dir: &Path,
    build: &CommandLine,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(), BuildError> {
    let (program, args) = build.argv();
    let run_error = |source| BuildError::Run {
        program: program.clone(),
        source,
    };
    let mut command = Command::new(&program);
    command.args(&args).current_dir(dir);
    let (status, output) = run_tool(project, &mut command, &build.to_string(), progress)
        .await
        .map_err(run_error)?;
    if status.success() {
        return Ok(());
    }
    Err(BuildError::CommandFailed {
        command: build.to_string(),
        dir: dir.display().to_string(),
        status: status.to_string(),
        output,
    })
}

/// Every line of a build tool's stream, each told to the progress as it comes.
async fn collect_lines(
    stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> String {
    let mut output = String::new();
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.trim().is_empty() {
            progress(Progress::Said(line.trim()));
        }
        output.push_str(&line);
        output.push('\n');
    }
    output
}

/// Whether package.json lists any (dev) dependency; without one there is nothing to install.
fn has_dependencies(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("package.json")) else {
        return true;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return true;
    };
    ["dependencies", "devDependencies"].iter().any(|key| {
        value[key]
            .as_object()
            .is_some_and(|dependencies| !dependencies.is_empty())
    })
}

/// Size and modification time: cargo rewrites the file on every real rebuild.
pub fn file_fingerprint(path: &Path) -> io::Result<String> {
    let metadata = fs::metadata(path)?;
    let modified = metadata
        .modified()?
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(format!("{}-{modified}", metadata.len()))
}

/// A hash of every file's path, size and mtime, [`LINKED_DIRS`] and [`SKIPPED_DIRS`] left out.
fn tree_fingerprint(dir: &Path) -> String {
    let mut hasher = DefaultHasher::new();
    let files: Vec<(PathBuf, String)> = tree_files(dir).into_iter().collect();
    files.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Every file under `dir` with its size and mtime ([`file_fingerprint`]), [`LINKED_DIRS`] and
/// [`SKIPPED_DIRS`] left out: what a deployment of the directory is made of.
pub fn tree_files(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = BTreeMap::new();
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name_text = name.to_string_lossy();
            if LINKED_DIRS.contains(&name_text.as_ref())
                || SKIPPED_DIRS.contains(&name_text.as_ref())
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(fingerprint) = file_fingerprint(&path) {
                files.insert(path, fingerprint);
            }
        }
    }
    files
}

/// `<service>-<10 random lowercase letters>`.
pub fn new_deployment_id(service: &str) -> String {
    let mut rng = rand::thread_rng();
    let letters: String = (0..10)
        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
        .collect();
    format!("{service}-{letters}")
}

/// Turns a build into a deployment: the current one when the build output did not change
/// (same fingerprint, artifact still on disk), else a new id with the artifact copied into
/// `<deployments_dir>/<id>/`. Returns the record and whether it is new.
pub fn prepare_deployment(
    deployments_dir: &Path,
    built: &Built,
    history: &ServiceHistory,
    release: bool,
    created_ms: u64,
) -> Result<(DeploymentRecord, bool), BuildError> {
    if let Some(current) = history.current_record() {
        let reusable = current.fingerprint == built.fingerprint
            && current.release == release
            && current.health == built.service.health_path()
            && deployments_dir.join(&current.id).is_dir();
        if reusable {
            return Ok((current.clone(), false));
        }
    }
    let id = new_deployment_id(&built.service.name);
    let target = deployments_dir.join(&id);
    let copy_error = |source| BuildError::Copy {
        path: target.display().to_string(),
        source,
    };
    crate::state::create_private_dir(&target).map_err(copy_error)?;
    let (kind, program, args) = match &built.service.kind {
        ServiceKind::Cargo { .. } => {
            let file_name = built
                .artifact
                .file_name()
                .expect("a cargo executable path ends in a file name");
            // A hard link costs nothing where a copy of a 60 MB debug binary takes ~150 ms of
            // every hot swap. It stays immutable: rustc's linkers (lld, GNU ld) write a new file
            // rather than rewriting the old one in place, and cargo re-links its uplifted copy,
            // so a rebuild never changes the bytes this link points at. Another filesystem: copy.
            let kept = target.join(file_name);
            if fs::hard_link(&built.artifact, &kept).is_err() {
                fs::copy(&built.artifact, &kept).map_err(copy_error)?;
            }
            (
                "cargo",
                file_name.to_string_lossy().into_owned(),
                Vec::new(),
            )
        }
        ServiceKind::Npm => {
            copy_tree(&built.artifact, &target).map_err(copy_error)?;
            let modules = built.artifact.join("node_modules");
            if modules.is_dir() {
                let absolute = modules.canonicalize().map_err(copy_error)?;
                std::os::unix::fs::symlink(absolute, target.join("node_modules"))
                    .map_err(copy_error)?;
            }
            ("npm", "npm".to_string(), vec!["start".to_string()])
        }
        ServiceKind::Command { run, .. } => {
            copy_tree(&built.artifact, &target).map_err(copy_error)?;
            for linked in LINKED_DIRS {
                let original = built.artifact.join(linked);
                if original.is_dir() {
                    let absolute = original.canonicalize().map_err(copy_error)?;
                    std::os::unix::fs::symlink(absolute, target.join(linked))
                        .map_err(copy_error)?;
                }
            }
            let (program, args) = run.argv();
            ("command", program, args)
        }
    };
    let record = DeploymentRecord {
        id,
        service: built.service.name.clone(),
        created_ms,
        kind: kind.into(),
        program,
        args,
        fingerprint: built.fingerprint.clone(),
        release,
        health: built.service.health_path(),
        worker: built.service.settings.is_worker(),
    };
    Ok((record, true))
}

/// What a build installs into a service's directory (dependencies, a virtualenv): linked
/// into each deployment rather than copied, as `node_modules` is.
const LINKED_DIRS: &[&str] = &["node_modules", ".venv", "venv"];
/// Never part of a deployment. `.stack` is the project's own state (deployments, logs, the
/// secret and the Redis password) when a service's `path` is the project's root (`"."`):
/// copied, it would copy itself without end and put secrets into every deployment.
const SKIPPED_DIRS: &[&str] = &[".git", "target", "__pycache__", crate::state::STATE_DIR];

/// Copies a source tree, leaving out what [`LINKED_DIRS`] links and [`SKIPPED_DIRS`]. A
/// symlink stays a symlink: one that resolves inside the tree keeps its own (relative) text,
/// so it points into the deployment's copy; any other one (absolute, leaving the tree through
/// `..`) points at its resolved absolute target, so it still resolves from the deployment's
/// directory, as it did from the service's. One that resolves nowhere is copied as written.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let root = from.canonicalize()?;
    copy_tree_in(&root, from, to)
}

fn copy_tree_in(root: &Path, from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if LINKED_DIRS.contains(&name_text.as_ref()) || SKIPPED_DIRS.contains(&name_text.as_ref()) {
            continue;
        }
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            copy_tree_in(root, &entry.path(), &to.join(&name))?;
        } else if file_type.is_file() {
            fs::copy(entry.path(), to.join(&name))?;
        } else if file_type.is_symlink() {
            let written = fs::read_link(entry.path())?;
            let link = match entry.path().canonicalize() {
                Ok(target) if written.is_relative() && target.starts_with(root) => written,
                Ok(target) => target,
                Err(_) => written,
            };
            std::os::unix::fs::symlink(link, to.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_copied_tree_keeps_its_symlinks_and_they_resolve_from_the_copy() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let service = dir.path().join("service");
        std::fs::create_dir_all(service.join("config")).unwrap();
        std::fs::write(service.join("config/app.toml"), "inside").unwrap();
        std::fs::write(dir.path().join("shared.txt"), "outside").unwrap();
        symlink("config/app.toml", service.join("app.toml")).unwrap();
        symlink("config", service.join("conf.d")).unwrap();
        symlink("../shared.txt", service.join("shared.txt")).unwrap();
        symlink(dir.path().join("shared.txt"), service.join("absolute.txt")).unwrap();
        symlink("missing", service.join("dangling")).unwrap();
        let copy = dir.path().join("deployment");
        super::copy_tree(&service, &copy).unwrap();
        let read = |name: &str| std::fs::read_to_string(copy.join(name)).unwrap();
        assert_eq!(read("app.toml"), "inside");
        assert_eq!(read("conf.d/app.toml"), "inside");
        assert_eq!(read("shared.txt"), "outside");
        assert_eq!(read("absolute.txt"), "outside");
        // Inside links stay relative, so they point into the copy, not the source.
        assert_eq!(
            std::fs::read_link(copy.join("app.toml")).unwrap(),
            std::path::Path::new("config/app.toml")
        );
        assert_eq!(
            std::fs::read_link(copy.join("shared.txt")).unwrap(),
            dir.path().canonicalize().unwrap().join("shared.txt")
        );
        assert_eq!(
            std::fs::read_link(copy.join("dangling")).unwrap(),
            std::path::Path::new("missing")
        );
    }

    #[test]
    fn cargo_names_the_crates_that_failed() {
        let output = "   Compiling writer v0.1.0\nerror[E0308]: mismatched types\nerror: could not compile `writer` (bin \"writer\") due to 1 previous error\nerror: could not compile `writer` (lib) due to 1 previous error\n";
        assert_eq!(failed_crates(output), ["writer"]);
        assert_eq!(failed_crates("warning: unused\n"), Vec::<String>::new());
    }

    #[test]
    fn units_are_the_libraries_build_scripts_and_root_binaries_built() {
        let metadata = serde_json::json!({
            "packages": [
                {"id": "app", "name": "app", "targets": [{"kind": ["bin"]}, {"kind": ["lib"]}, {"kind": ["custom-build"]}, {"kind": ["test"]}]},
                {"id": "dep", "name": "dep", "targets": [{"kind": ["lib"]}, {"kind": ["bin"]}]},
                {"id": "macro", "name": "macro", "targets": [{"kind": ["proc-macro"]}]},
                {"id": "devonly", "name": "devonly", "targets": [{"kind": ["lib"]}]}
            ],
            "resolve": {"nodes": [
                {"id": "app", "deps": [
                    {"pkg": "dep", "dep_kinds": [{"kind": null}]},
                    {"pkg": "macro", "dep_kinds": [{"kind": "build"}]},
                    {"pkg": "devonly", "dep_kinds": [{"kind": "dev"}]}
                ]},
                {"id": "dep", "deps": []},
                {"id": "macro", "deps": []},
                {"id": "devonly", "deps": []}
            ]}
        });
        // app: bin, lib, build script; dep: lib (not its bin); macro; not the dev-only one.
        assert_eq!(count_units(&metadata, &["app"]), Some(5));
    }

    use super::*;

    #[test]
    fn finds_cargo_binaries_and_npm_starts_but_not_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let services = dir.path().join("services");
        for (name, files) in [
            (
                "writer",
                vec![
                    ("Cargo.toml", "[package]\nname = \"writer-bin\"\n"),
                    ("src/main.rs", ""),
                ],
            ),
            (
                "session",
                vec![
                    ("Cargo.toml", "[package]\nname = \"session\"\n"),
                    ("src/lib.rs", ""),
                ],
            ),
            (
                "web",
                vec![("package.json", r#"{"scripts":{"start":"node index.js"}}"#)],
            ),
            ("notes", vec![("README", "")]),
        ] {
            for (file, text) in files {
                let path = services.join(name).join(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
        }
        let found = discover(dir.path(), &[]).unwrap();
        let names: Vec<(&str, &ServiceKind)> =
            found.iter().map(|s| (s.name.as_str(), &s.kind)).collect();
        assert_eq!(
            names,
            [
                ("web", &ServiceKind::Npm),
                (
                    "writer",
                    &ServiceKind::Cargo {
                        package: "writer-bin".into()
                    }
                )
            ]
        );
        assert_eq!(
            discover(dir.path(), &["./services/web".into()])
                .unwrap()
                .len(),
            1
        );
        match discover(dir.path(), &["reader".into()]).unwrap_err() {
            BuildError::UnknownService { available, .. } => {
                assert_eq!(available, ["web", "writer"])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            discover(dir.path(), &["./services/session".into()]).unwrap_err(),
            BuildError::NotAService { .. }
        ));
    }

    #[test]
    fn deployment_ids_are_the_service_and_ten_letters() {
        let id = new_deployment_id("writer");
        let letters = id.strip_prefix("writer-").unwrap();
        assert_eq!(letters.len(), 10);
        assert!(letters.chars().all(|c| c.is_ascii_lowercase()));
    }
}
