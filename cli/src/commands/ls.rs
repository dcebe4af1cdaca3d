//! `stack ls [--json]`: deployments with url, instances (ready/wanted), state and age; from the
//! running `stack up` (which adds the kept, stopped ones a rollback can return to), else from
//! `.stack/state.json` (everything STOPPED). `(live)` marks each service's current deployment;
//! a service a redeploy is building shows as `<service> (building)`, state BUILDING; a first
//! deployment that waits for its `depends_on` shows WAITING and for what (`WAITING for db healthy`).

use std::path::Path;
use std::process::ExitCode;

use crate::args::LsArgs;
use crate::control::api::RedisAnswer;
use crate::control::{Client, ControlError, DeploymentStatus};
use crate::output::{self, CliError, CliResult};
use crate::redis::managed::RedisState;
use crate::state::State;
use crate::supervisor::logs::now_ms;
use crate::supervisor::DeploymentState;

/// The port shown in URLs when no `stack up` runs (the default of `--port`).
const DEFAULT_PORT: u16 = 3000;

pub fn run(project_dir: &Path, args: LsArgs) -> CliResult<ExitCode> {
    let client = Client::new(project_dir);
    let (deployments, running) = match client.blocking(client.deployments()) {
        Ok(deployments) => (deployments, true),
        Err(ControlError::NotRunning { .. }) => {
            let state =
                State::load(project_dir).map_err(|error| CliError::new(error.to_string()))?;
            let port = state.proxy_port.unwrap_or(DEFAULT_PORT);
            (DeploymentStatus::all_stored(&state, port), false)
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&deployments)
                .expect("statuses are plain data and serialise")
        );
        return Ok(ExitCode::SUCCESS);
    }
    // A service being built is a row of its own, not a deployment yet.
    let n_building = deployments
        .iter()
        .filter(|deployment| deployment.state == DeploymentState::Building)
        .count();
    let n_deployments = deployments.len() - n_building;
    let noun = if n_deployments == 1 {
        "deployment"
    } else {
        "deployments"
    };
    let building = if n_building > 0 {
        format!(", {n_building} building")
    } else {
        String::new()
    };
    let note = if running {
        ""
    } else {
        " (no `stack up` running)"
    };
    output::info(format!("{n_deployments} {noun}{building}{note}"));
    if deployments.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_ms();
    let mut rows = vec![[
        "deployment".to_string(),
        "url".to_string(),
        "instances".to_string(),
        "state".to_string(),
        "age".to_string(),
    ]];
    for deployment in &deployments {
        rows.push([
            if deployment.state == DeploymentState::Building {
                format!("{} (building)", deployment.service)
            } else {
                format!(
                    "{}{}",
                    deployment.id,
                    if deployment.current { " (live)" } else { "" }
                )
            },
            match &deployment.https_url {
                Some(https) => format!("{} {https}", deployment.url),
                None => deployment.url.clone(),
            },
            format!("{}/{}", deployment.ready, deployment.wanted),
            match &deployment.waiting_for {
                Some(on) => format!("{} for {on}", deployment.state),
                None => deployment.state.to_string(),
            },
            output::age(deployment.created_ms, now),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
    if running {
        print_managed_redis(&client);
    }
    Ok(ExitCode::SUCCESS)
}

/// The managed Redis's line under the table: its state and restarts (nothing for a Redis
/// that `REDIS_SESSION_URL` names, which stack does not run).
fn print_managed_redis(client: &Client) {
    let Ok(RedisAnswer {
        managed: Some(status),
        ..
    }) = client.blocking(client.redis())
    else {
        return;
    };
    let restarts = match status.restarts {
        0 => String::new(),
        1 => ", 1 restart".into(),
        n => format!(", {n} restarts"),
    };
    let exit = match (&status.state, &status.last_exit) {
        (RedisState::Ready, _) | (_, None) => String::new(),
        (_, Some(exit)) => format!(" ({exit})"),
    };
    output::info(format!(
        "Redis (managed) on port {}: {}{restarts}{exit}",
        status.port, status.state
    ));
}
