//! `stack scale <service|deployment> <N>`: through the running `stack up` (answers once the new
//! instances are ready); without one, recorded in `.stack/state.json` for the next `stack up`.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::args::ScaleArgs;
use crate::control::api::{ScaleAnswer, ScaleRequest};
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state::Store;

pub fn run(project_dir: &Path, args: ScaleArgs) -> CliResult<ExitCode> {
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("Scaling {} to {}", args.target, args.instances));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let request = ScaleRequest {
        target: args.target.clone(),
        instances: args.instances,
    };
    let client = Client::new(project_dir);
    let answer = client.blocking(client.scale(request));
    spinner.finish_and_clear();
    match answer {
        Ok(ScaleAnswer {
            deployment,
            wanted,
            waiting_for: Some(on),
            ..
        }) => {
            output::success(format!(
                "`{deployment}` will run {}: it starts once its `depends_on` is met (it waits for {on})",
                plural_instances(wanted)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Ok(answer) if answer.at_start => {
            output::success(format!(
                "`{}` will run {}: `stack up` is still building it, and starts that many",
                answer.deployment,
                plural_instances(answer.wanted)
            ));
            Ok(ExitCode::SUCCESS)
        }
        Ok(answer) => {
            output::success(format!(
                "{} scaled to {} [{:.1}s]",
                answer.deployment,
                plural_instances(answer.wanted),
                started.elapsed().as_secs_f64()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Err(ControlError::NotRunning { .. }) => record(project_dir, &args),
        Err(error) => Err(error.into()),
    }
}

/// No `stack up`: remember the count for the service (a deployment id counts for its service).
fn record(project_dir: &Path, args: &ScaleArgs) -> CliResult<ExitCode> {
    let target = args
        .target
        .strip_suffix(".localhost")
        .unwrap_or(&args.target);
    // `services/` itself, or a path, is no service (the directory test below would pass).
    if target.is_empty() || target.contains('/') || target == "." || target == ".." {
        return Err(
            CliError::new(format!("`{target}` is not a service or deployment name"))
                .hint("Name a service (`stack ls` lists them, and the directories under `services/`) or a deployment id."),
        );
    }
    let recorded = Store::new(project_dir).update(|state| {
        let service = if state.deployments.contains_key(target)
            || project_dir.join("services").join(target).is_dir()
        {
            target.to_string()
        } else {
            let (service, _) = state
                .deployments
                .iter()
                .find(|(_, history)| history.find(target).is_some())?;
            service.clone()
        };
        state.set_scale(&service, args.instances);
        Some(service)
    });
    let service = recorded
        .map_err(|error| CliError::new(error.to_string()))?
        .ok_or_else(|| {
            CliError::new(format!("no service or deployment named `{target}`"))
                .hint("See `stack ls` for the deployments, or the directories under `services/`.")
        })?;
    output::success(format!(
        "`{service}` will run {}; no `stack up` is running, so this applies at the next `stack up`",
        plural_instances(args.instances)
    ));
    Ok(ExitCode::SUCCESS)
}

fn plural_instances(n: usize) -> String {
    if n == 1 {
        "1 instance".into()
    } else {
        format!("{n} instances")
    }
}
