//! `stack doctor [--json]`: what a `stack up` here would need, and what is in its way. Each
//! check says what it found, and for a problem what to do; the exit code is 1 when one fails.
//!
//! - the programs the project needs (redis-server when `REDIS_SESSION_URL` is unset, node and
//!   npm for Node services, cargo for Cargo ones, and what the `build` and `run` of services
//!   declared in `stack.toml` name), with their versions or paths; a `stack.toml` that
//!   `stack up` would refuse;
//! - the proxy's port (3000, or `--port`) and HTTPS port (3443, or `--https-port`) free, or
//!   held by whom;
//! - the local CA under `$STACK_HOME`: loadable (its key 0600, not corrupt or expired), and
//!   whether `stack trust` installed it (advice only: `stack up` works without);
//! - what a `stack up` killed may have left in `.stack/`: a socket nobody answers on, process
//!   records of processes that are gone;
//! - `.env` tracked by git, or not ignored, and each line `stack up --dotenv` would refuse;
//! - the permissions of `.stack/` and the secrets in it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::args::DoctorArgs;
use crate::config::{self, ServicesError};
use crate::control::{self, lock};
use crate::env::{self, REDIS_SESSION_URL};
use crate::init;
use crate::output::{self, CliResult};
use crate::prerequisites::{self, Needs, Os, Tool};
use crate::state::{secret, STATE_DIR};
use crate::supervisor::build::{self, Service, ServiceKind};
use crate::supervisor::process;
use crate::tls::{self, trust, Ca};

/// One finding.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    /// What was found (a version, who holds a port).
    detail: String,
    /// What to do, when it is not ok (or, for advice, what would be better).
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// Nothing in the way of `stack up`, but something worth doing.
    fn advice(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            fix: Some(fix.into()),
            ..Check::ok(name, detail)
        }
    }

    fn problem(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
}

pub fn run(project_dir: &Path, args: DoctorArgs) -> CliResult<ExitCode> {
    let mut checks = programs(project_dir);
    let ports = [args.port, args.https_port];
    checks.push(port(project_dir, args.port, "port", "--port", &ports));
    checks.push(port(
        project_dir,
        args.https_port,
        "HTTPS port",
        "--https-port",
        &ports,
    ));
    checks.extend(local_ca(&tls::stack_home()));
    checks.extend(leftovers(project_dir));
    checks.extend(dotenv(project_dir));
    checks.extend(permissions(project_dir));
    let ok = checks.iter().all(|check| check.ok);
    if args.json {
        let report = Report { ok, checks };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report is plain data")
        );
    } else {
        for check in &checks {
            if check.ok && check.fix.is_none() {
                output::info(format!("{}: {}", check.name, check.detail));
            } else {
                // A detail of several lines (a stack.toml with errors) stays under its name.
                let detail = check.detail.replace('\n', "\n  ");
                output::warn(format!("{}: {detail}", check.name));
                if let Some(fix) = &check.fix {
                    eprintln!("  {fix}");
                }
            }
        }
        let problems = checks.iter().filter(|check| !check.ok).count();
        match problems {
            0 => output::success("Nothing in the way of `stack up`"),
            1 => output::info("1 problem (what to do is under it)"),
            n => output::info(format!("{n} problems (what to do is under each)")),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Each program the project needs, with its version, or how to install it.
fn programs(project_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    // What `stack up` would run: `stack.toml` resolved against discovery. A file it would
    // refuse is a problem of its own; the rest is still checked on what discovery finds.
    let declared = config::load_resolved(project_dir)
        .map_err(ServicesError::from)
        .and_then(|resolved| config::services(project_dir, &resolved, &[]));
    let services = match declared {
        Ok(services) => services,
        Err(error) => {
            let fix = match error {
                ServicesError::Build(build::BuildError::NoServices { .. }) => {
                    "Add a directory under `services/` (a Cargo package with a binary, or a \
                     package.json with a `start` script), or declare a service in `stack.toml`; \
                     `stack init` writes the demo's."
                }
                _ => "Fix it: `stack up` stops on it before building anything.",
            };
            checks.push(Check::problem("services", error.to_string(), fix));
            build::discover(project_dir, &[]).unwrap_or_default()
        }
    };
    let needs = Needs {
        managed_redis: std::env::var_os(REDIS_SESSION_URL).is_none_or(|url| url.is_empty()),
        node: services
            .iter()
            .any(|service| service.kind == ServiceKind::Npm),
    };
    let path = std::env::var("PATH").ok();
    checks.extend(
        needs
            .tools()
            .into_iter()
            .map(|tool| match tool.version(path.as_deref()) {
                Some(version) => Check::ok(tool.program(), version),
                None => missing(tool),
            }),
    );
    let cargo_services = services
        .iter()
        .any(|service| matches!(service.kind, ServiceKind::Cargo { .. }));
    if cargo_services {
        checks.push(match prerequisites::find("cargo", path.as_deref()) {
            Some(found) => Check::ok("cargo", found.display().to_string()),
            None => Check::problem(
                "cargo",
                "not found on PATH; the Rust services need it",
                "Install Rust with rustup: https://rustup.rs",
            ),
        });
    }
    checks.extend(declared_programs(&services, path.as_deref()));
    checks
}

/// The programs declared services run (`python3`, `go`): where each was found, or which
/// services need it and how to install it.
fn declared_programs(services: &[Service], path: Option<&str>) -> Vec<Check> {
    let commands = Service::programs_of(services);
    let missing = prerequisites::missing_programs(&commands, path);
    // Found ones on one line (a build names `cp` and `cmp` as readily as `python3`); each
    // missing one is a problem of its own, with the services that need it.
    let mut found: Vec<String> = Vec::new();
    for (_, program) in &commands {
        if let Some(at) = prerequisites::find(program, path) {
            let shown = format!("{program} ({})", at.display());
            if !found.contains(&shown) {
                found.push(shown);
            }
        }
    }
    let mut checks: Vec<Check> = missing
        .into_iter()
        .map(|entry| {
            let fix = match prerequisites::interpreter_hint(&entry.program, Os::detect()) {
                Some(command) => format!("Install it with `{command}`."),
                None => "Install it, or change the service's `build`/`run` in `stack.toml` (or its `Procfile` line).".into(),
            };
            let users: Vec<String> = entry
                .services
                .iter()
                .map(|name| format!("`{name}`"))
                .collect();
            let detail = format!(
                "not installed (not found on PATH); needed for {}",
                users.join(", ")
            );
            Check::problem(&entry.program, detail, fix)
        })
        .collect();
    if !found.is_empty() {
        checks.insert(0, Check::ok(DECLARED_PROGRAMS, found.join(", ")));
    }
    checks
}

/// The check listing the programs declared services run that are on PATH.
const DECLARED_PROGRAMS: &str = "programs of stack.toml";

fn missing(tool: Tool) -> Check {
    Check::problem(
        tool.program(),
        format!(
            "not installed (not found on PATH); needed for {}",
            tool.needed_for()
        ),
        format!(
            "Install it with `{}`.",
            prerequisites::install_command(&[tool], Os::detect())
        ),
    )
}

/// Whether `port` on 127.0.0.1 is free, and if not, who holds it; `flag` chooses another,
/// and the advice names one that is free and none of `taken` (the other port stack wants).
fn port(project_dir: &Path, port: u16, what: &str, flag: &str, taken: &[u16]) -> Check {
    let free_after = || {
        (port.saturating_add(1)..=port.saturating_add(100))
            .find(|candidate| {
                !taken.contains(candidate)
                    && std::net::TcpListener::bind(("127.0.0.1", *candidate)).is_ok()
            })
            .unwrap_or(0)
    };
    let name = format!("{what} {port}");
    if port == 0 {
        return Check::ok(name, "a free one is picked at start");
    }
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Check::ok(name, "free");
    }
    let holder = process::port_holder(port);
    let ours = lock_holder(project_dir);
    match holder {
        Some((pid, _)) if Some(pid) == ours => {
            Check::ok(name, format!("this project's `stack up` (pid {pid})"))
        }
        Some((pid, command)) => Check::problem(
            name,
            format!("held by `{command}` (pid {pid})"),
            format!(
                "Stop it, or start stack on another port: `stack up {flag} {}`.",
                free_after()
            ),
        ),
        None => Check::problem(
            name,
            "held by a process of another user, or in use",
            format!(
                "Start stack on another port: `stack up {flag} {}`.",
                free_after()
            ),
        ),
    }
}

/// The local CA in `home`: none yet (the first `stack up` makes it), or loadable as `stack up`
/// loads it (the key 0600, both files valid and together, not expired); then whether `stack
/// trust` installed it.
fn local_ca(home: &Path) -> Vec<Check> {
    let cert = home.join(tls::CA_CERT_FILE);
    let key = home.join(tls::CA_KEY_FILE);
    if !cert.exists() && !key.exists() {
        return vec![Check::ok(
            "local CA",
            format!(
                "none yet in `{}`: the first `stack up` makes one",
                home.display()
            ),
        )];
    }
    let ca = match Ca::load(home) {
        Ok(ca) => ca,
        Err(error) => return vec![Check::problem("local CA", error.to_string(), error.hint())],
    };
    let mode = fs::metadata(&key).map_or(0, |metadata| metadata.permissions().mode() & 0o777);
    let mut checks = vec![Check::ok(
        "local CA",
        format!(
            "`{}`, its key `{}` mode {mode:o}",
            ca.cert_path().display(),
            key.display()
        ),
    )];
    let ends = ca.not_after();
    if ends <= time::OffsetDateTime::now_utc() + tls::LEAF_VALIDITY {
        checks.push(Check::advice(
            "CA validity",
            format!(
                "the local CA ends on {}: the certificates it signs now end with it",
                ends.date()
            ),
            format!(
                "Make a new one before then: `stack trust --uninstall`, delete `{}` and `{}`, then `stack trust`.",
                ca.cert_path().display(),
                key.display()
            ),
        ));
    }
    checks.push(if trust::is_trusted(home) {
        Check::ok("CA trust", "installed by `stack trust`")
    } else {
        Check::advice(
            "CA trust",
            "not installed: browsers and tools will refuse the HTTPS port's certificates",
            "Run `stack trust` (it says what it changes; `stack trust --uninstall` undoes it).",
        )
    });
    checks
}

/// The pid written in `.stack/lock`, while a `stack up` holds it.
fn lock_holder(project_dir: &Path) -> Option<u32> {
    let stack_dir = project_dir.join(STATE_DIR);
    if !lock::is_held(&stack_dir) {
        return None;
    }
    fs::read_to_string(stack_dir.join("lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A socket nobody answers on, and process records of processes that are gone: what a
/// `stack up` that was killed leaves behind.
fn leftovers(project_dir: &Path) -> Vec<Check> {
    let stack_dir = project_dir.join(STATE_DIR);
    let mut checks = Vec::new();
    let socket = control::socket_path(project_dir);
    if socket.exists() && !lock::is_held(&stack_dir) {
        checks.push(Check::problem(
            "control socket",
            format!(
                "`{}` is left from a `stack up` that did not stop cleanly",
                socket.display()
            ),
            "Run `stack down` (it cleans up), or remove the file.",
        ));
    }
    let records = process::recorded_groups(&process::pids_dir(project_dir));
    if !records.is_empty() && !lock::is_held(&stack_dir) {
        checks.push(Check::problem(
            "process records",
            format!(
                "{} process group(s) recorded in `.stack/pids` by a `stack up` that did not stop cleanly",
                records.len()
            ),
            "Run `stack down`: it stops what is still running and removes the records.",
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok("leftovers", "none in `.stack/`"));
    }
    checks
}

fn dotenv(project_dir: &Path) -> Vec<Check> {
    let path = project_dir.join(".env");
    if !path.is_file() {
        return Vec::new();
    }
    let git = match init::dotenv_warning(project_dir, Path::new(".env")) {
        None => Check::ok(".env", "not tracked by git, and ignored"),
        Some(warning) => Check::problem(
            ".env",
            warning,
            "Keep secrets out of the repository (see above).",
        ),
    };
    // What `stack up --dotenv` would refuse, each line by its place; values never shown.
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            let fix = "Make it readable, or remove it.";
            return vec![git, Check::problem(".env lines", error.to_string(), fix)];
        }
    };
    let parsed = match env::parse_dotenv(Path::new(".env"), &text) {
        Ok(pairs) => Check::ok(".env lines", format!("{} variables", pairs.len())),
        Err(errors) => Check::problem(
            ".env lines",
            errors.to_string(),
            "Fix those lines: `stack up --dotenv` stops on them and starts nothing.",
        ),
    };
    vec![git, parsed]
}

/// `.stack/` 0700 and the secrets 0600: another user of the machine reads none of it.
fn permissions(project_dir: &Path) -> Vec<Check> {
    let stack_dir = project_dir.join(STATE_DIR);
    let mut checks = Vec::new();
    let mut check = |path: &Path, wanted: u32, name: &str| {
        let Ok(metadata) = fs::metadata(path) else {
            return;
        };
        let mode = metadata.permissions().mode() & 0o777;
        checks.push(if mode & !wanted == 0 {
            Check::ok(name, format!("mode {mode:o}"))
        } else {
            Check::problem(
                name,
                format!("mode {mode:o}: other users of this machine can read it"),
                format!("Run `chmod {wanted:o} {}`.", path.display()),
            )
        });
    };
    check(&stack_dir, 0o700, ".stack/");
    check(&secret::path(&stack_dir), 0o600, ".stack/session-secret");
    check(
        &stack_dir.join(secret::REDIS_PASSWORD),
        0o600,
        ".stack/redis-password",
    );
    checks
}
