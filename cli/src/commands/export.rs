//! `stack export nginx <alias> [-o FILE] [--check] [--tls-cert FILE --tls-key FILE]`: render a
//! stored alias as an nginx config (with a TLS server block when given the files), print it or
//! write it to a file, optionally after `nginx -t` accepted it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use crate::args::{ExportArgs, ExportFormat};
use crate::control::api::InstanceState;
use crate::control::{Client, ControlError};
use crate::export::nginx::{self, RenderOptions};
use crate::export::{ExportError, Plan, Project, Running};
use crate::output::{self, CliError, CliResult};
use crate::state::aliases::normalize_host;
use crate::state::{write_atomically, State};

pub fn run(project_dir: &Path, args: ExportArgs) -> CliResult<ExitCode> {
    let ExportFormat::Nginx {
        alias,
        output: output_file,
        check,
        tls_cert,
        tls_key,
        tls_listen,
    } = args.format;
    let host = normalize_host(&alias).map_err(|error| {
        CliError::new(error.to_string()).hint("Use a host name such as `counter-demo.localhost`.")
    })?;
    let state = State::load(project_dir).map_err(|error| CliError::new(error.to_string()))?;
    let running = running_instances(project_dir)?;
    let project = Project {
        state: &state,
        services: Project::find_services(project_dir),
        running: running.as_ref(),
    };
    let plan = Plan::new(&project, &host).map_err(|error| export_error(&host, error))?;
    for warning in &plan.warnings {
        output::warn(warning);
    }
    let tls = match (tls_cert, tls_key) {
        (Some(certificate), Some(key)) => Some(nginx::TlsFiles {
            certificate,
            key,
            listen: tls_listen,
        }),
        _ => None,
    };
    let config = nginx::render(
        &plan,
        &RenderOptions {
            tls,
            ..RenderOptions::default()
        },
    );
    if check {
        nginx::check(&config).map_err(|error| export_error(&host, error))?;
    }
    match output_file {
        None => print!("{config}"),
        Some(file) => {
            let path = project_dir.join(&file);
            write_atomically(&path, config.as_bytes()).map_err(|error| {
                CliError::new(format!("cannot write `{}`: {error}", file.display()))
                    .hint("Check the path and its permissions.")
            })?;
            let checked = if check { ", checked by `nginx -t`" } else { "" };
            output::success(format!(
                "nginx config for {host} written to `{}` ({} upstream{}{checked})",
                file.display(),
                plan.upstreams.len(),
                if plan.upstreams.len() == 1 { "" } else { "s" },
            ));
            if !plan.from_running {
                output::info(
                    "No `stack up` was running: upstreams use the default ports; edit their `server` lines for production.",
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The ready instances of the running `stack up`, from its control socket; `None` when no
/// `stack up` runs here.
fn running_instances(project_dir: &Path) -> CliResult<Option<Running>> {
    let client = Client::new(project_dir);
    let deployments = match client.blocking(client.deployments()) {
        Ok(deployments) => deployments,
        Err(ControlError::NotRunning { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    // A `stack up` still on its first build runs nothing yet: no ports to read.
    if !deployments.iter().any(|deployment| deployment.current) {
        return Ok(None);
    }
    let mut running = Running::default();
    for deployment in deployments {
        // Instances listen on the loopback address (the supervisor binds them there).
        let addresses: Vec<SocketAddr> = deployment
            .instances
            .iter()
            .filter(|instance| instance.state == InstanceState::Ready)
            .filter_map(|instance| instance.port)
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .collect();
        if deployment.current {
            running
                .services
                .insert(deployment.service.clone(), addresses.clone());
        }
        running.deployments.insert(deployment.id, addresses);
    }
    Ok(Some(running))
}

fn export_error(host: &str, error: ExportError) -> CliError {
    let hint = match &error {
        ExportError::NoAlias { known, .. } if known.is_empty() => {
            "There are no aliases yet; set one with `stack alias <host> --rules <file>`.".to_string()
        }
        ExportError::NoAlias { known, .. } => format!("Aliases: {}.", known.join(", ")),
        ExportError::RulesDoNotLoad { .. } => {
            format!("Set them again with `stack alias {host} --rules <file>`.")
        }
        ExportError::UnresolvedDest { .. } => {
            "Fix the rule's `dest`, then set the rules again with `stack alias`.".to_string()
        }
        ExportError::AliasLoop(_) => "Point one of them at a service instead.".to_string(),
        ExportError::NginxMissing => {
            "Install it (`apt-get install nginx-light`), or export without `--check`.".to_string()
        }
        ExportError::NginxRefused(_) | ExportError::NginxRun(_) => {
            "Nothing was written. This is a bug in `stack export`; please report it with the alias's rules.".to_string()
        }
    };
    CliError::new(error.to_string()).hint(hint)
}
