//! `stack logs <service|deployment> [-f] [-n N]`: stored lines, then live ones with `-f`, from
//! the running `stack up`; without one, what `.stack/logs/` holds.

use std::path::Path;
use std::process::ExitCode;

use http_body_util::BodyExt;

use crate::args::LogsArgs;
use crate::control::{self, client, Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state;
use crate::supervisor::logs::{self, LogLine};

pub fn run(project_dir: &Path, args: LogsArgs) -> CliResult<ExitCode> {
    if args.since.is_some() {
        return Err(CliError::new("`--since` is not supported yet")
            .hint("Use `-n N` to choose how many stored lines to print."));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(logs_async(project_dir, args))
}

async fn logs_async(project_dir: &Path, args: LogsArgs) -> CliResult<ExitCode> {
    let client = Client::new(project_dir);
    let path = format!(
        "/v1/logs?target={}&lines={}&follow={}",
        args.target,
        args.lines,
        if args.follow { 1 } else { 0 }
    );
    let response = match client.send("GET", &path, None).await {
        Ok(response) => response,
        Err(ControlError::NotRunning { .. }) => return from_disk(project_dir, &args),
        Err(error) => return Err(error.into()),
    };
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        return Err(client::refused(status, &bytes).into());
    }
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(line) = serde_json::from_slice::<LogLine>(&line) {
                print_line(&line);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn from_disk(project_dir: &Path, args: &LogsArgs) -> CliResult<ExitCode> {
    let Some(deployment) = control::server::stored_deployment(project_dir, &args.target) else {
        return Err(
            CliError::new(format!("no service or deployment named `{}`", args.target))
                .hint("See `stack ls` for the deployments."),
        );
    };
    let logs_dir = project_dir.join(state::STATE_DIR).join("logs");
    let lines = logs::read_stored(&logs_dir, &deployment, args.lines).map_err(|error| {
        CliError::new(format!("cannot read the logs of `{deployment}`: {error}"))
    })?;
    for line in &lines {
        print_line(line);
    }
    if args.follow {
        output::warn("no `stack up` is running here, so there are no new lines to follow");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_line(line: &LogLine) {
    let service = line.source.split('.').next().unwrap_or(&line.source);
    let style = logs::prefix_style(service);
    println!(
        "{} {}",
        style.apply_to(format!("{} |", line.source)),
        line.text
    );
}
