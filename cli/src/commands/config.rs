//! `stack config [--json]`: the services `stack up` would start, in start order, each setting
//! with where it came from (`detected`, `default`, or `stack.toml:LINE`). Environment values
//! are never shown, only their names. A bad `stack.toml` is every error of it at once.

use std::path::Path;
use std::process::ExitCode;

use crate::args::ConfigArgs;
use crate::config::{self, model::duration_text, model::Builder, model::ResolvedService};
use crate::output::{CliError, CliResult};

pub fn run(cwd: &Path, args: ConfigArgs) -> CliResult<ExitCode> {
    let resolved = config::load_resolved(cwd)
        .map_err(|errors| errors.to_cli("Fix the file and run `stack config` again."))?;
    // Each `env_file` read as `stack up` reads it: a file `up` refuses is refused here too.
    let env_file_errors: Vec<String> = resolved
        .services
        .iter()
        .filter_map(|service| {
            let reason = config::run_settings(service, cwd).err()?;
            Some(
                config::ServicesError::EnvFile {
                    service: service.name.clone(),
                    reason,
                }
                .to_string(),
            )
        })
        .collect();
    if !env_file_errors.is_empty() {
        return Err(CliError::new(env_file_errors.join("\n"))
            .hint("Fix the file and run `stack config` again."));
    }
    if args.json {
        let text = serde_json::to_string_pretty(&resolved)
            .map_err(|error| CliError::new(format!("cannot write the JSON: {error}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let procfile = resolved
        .services
        .iter()
        .any(|service| service.path.from.starts_with(crate::config::procfile::FILE));
    let sources = match (&resolved.file, procfile) {
        (Some(file), true) => format!("from `{file}`, the `Procfile` and `services/`"),
        (Some(file), false) => format!("from `{file}` and `services/`"),
        (None, true) => "from the `Procfile` and `services/` (no `stack.toml`)".to_string(),
        (None, false) => "detected under `services/` (no `stack.toml`)".to_string(),
    };
    crate::output::info(format!(
        "{} service(s) {sources}, in start order",
        resolved.services.len()
    ));
    for service in &resolved.services {
        println!();
        println!("{}", service.name);
        for (key, value, from) in rows(service) {
            println!("  {key:<13} {value:<44} {from}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One (setting, value, origin) row per setting the service has.
fn rows(service: &ResolvedService) -> Vec<(String, String, String)> {
    let mut rows = vec![(
        "path".to_string(),
        service.path.value.clone(),
        service.path.from.clone(),
    )];
    let from = service.builder.from.clone();
    match &service.builder.value {
        Builder::Cargo { package } => {
            rows.push(("build".into(), format!("cargo (package `{package}`)"), from))
        }
        Builder::Npm => rows.push(("build".into(), "npm install, npm start".into(), from)),
        Builder::Command { build, run } => {
            if let Some(build) = build {
                rows.push(("build".into(), build.to_string(), from.clone()));
            }
            rows.push(("run".into(), run.to_string(), from));
        }
    }
    rows.push((
        "kind".into(),
        format!("{:?}", service.kind.value).to_lowercase(),
        service.kind.from.clone(),
    ));
    if let Some(instances) = &service.instances {
        rows.push((
            "instances".into(),
            instances.value.to_string(),
            instances.from.clone(),
        ));
    }
    for (key, value) in &service.env {
        rows.push((format!("env.{key}"), "***".into(), value.from.clone()));
    }
    if let Some(env_file) = &service.env_file {
        rows.push((
            "env_file".into(),
            env_file.value.clone(),
            env_file.from.clone(),
        ));
    }
    if let Some(health) = &service.health {
        let value = &health.value;
        rows.push((
            "health".into(),
            format!(
                "{} every {}, timeout {}, {} retries{}",
                value.check,
                duration_text::format(value.interval),
                duration_text::format(value.timeout),
                value.retries,
                if value.start_period.is_zero() {
                    String::new()
                } else {
                    format!(
                        ", start period {}",
                        duration_text::format(value.start_period)
                    )
                }
            ),
            health.from.clone(),
        ));
    }
    for (dependency, condition) in &service.depends_on {
        rows.push((
            "depends_on".into(),
            format!("{dependency} ({:?})", condition.value).to_lowercase(),
            condition.from.clone(),
        ));
    }
    rows.push((
        "watch".into(),
        service.watch.value.join(", "),
        service.watch.from.clone(),
    ));
    if let Some(ignore) = &service.ignore {
        rows.push((
            "ignore".into(),
            ignore.value.join(", "),
            ignore.from.clone(),
        ));
    }
    rows.push((
        "stop_signal".into(),
        service.stop_signal.value.clone(),
        service.stop_signal.from.clone(),
    ));
    rows.push((
        "stop_timeout".into(),
        duration_text::format(service.stop_timeout.value),
        service.stop_timeout.from.clone(),
    ));
    let restart = serde_json::to_value(service.restart.value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default();
    rows.push(("restart".into(), restart, service.restart.from.clone()));
    rows
}
