//! `stack requests [-n N] [-f] [--json] [--host H] [--status S]`: the proxy's request log
//! (the last 1,000 requests) through the control socket, filtered here; `-f` asks for what came
//! since the last answer every quarter second.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::args::RequestsArgs;
use crate::control::api::RequestRecord;
use crate::control::client::Client;
use crate::control::ControlError;
use crate::output::{self, CliError, CliResult};
use crate::proxy::host_key;

/// How often `-f` asks for new requests.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

pub fn run(project_dir: &Path, args: RequestsArgs) -> CliResult<ExitCode> {
    let filter = Filter::new(&args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(requests_async(project_dir, &args, &filter))
}

async fn requests_async(
    project_dir: &Path,
    args: &RequestsArgs,
    filter: &Filter,
) -> CliResult<ExitCode> {
    let client = Client::new(project_dir);
    let answer = client.requests(0).await.map_err(not_running)?;
    if !answer.enabled {
        output::warn("this `stack up` runs with the request log off (`STACK_REQUEST_LOG=off`)");
    }
    let matching: Vec<&RequestRecord> = answer
        .requests
        .iter()
        .filter(|record| filter.keeps(record))
        .collect();
    let first = matching.len().saturating_sub(args.lines);
    for record in &matching[first..] {
        print_record(record, args.json);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut since = answer.last_seq;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let answer = match client.requests(since).await {
            Ok(answer) => answer,
            // `stack up` stopped: nothing more will come.
            Err(ControlError::NotRunning { .. }) => return Ok(ExitCode::SUCCESS),
            Err(refused) => return Err(refused.into()),
        };
        since = answer.last_seq;
        for record in answer.requests.iter().filter(|record| filter.keeps(record)) {
            print_record(record, args.json);
        }
    }
}

fn not_running(error: ControlError) -> CliError {
    match error {
        ControlError::NotRunning { .. } => CliError::new("no `stack up` is running here").hint(
            "The request log lives in the running proxy: start `stack up`, then send it requests.",
        ),
        other => other.into(),
    }
}

/// `--host` and `--status`.
struct Filter {
    host: Option<String>,
    statuses: Vec<StatusPattern>,
}

enum StatusPattern {
    Exact(u16),
    /// `5xx`: the first digit.
    Class(u16),
}

impl Filter {
    fn new(args: &RequestsArgs) -> CliResult<Filter> {
        let statuses = match &args.status {
            None => Vec::new(),
            Some(text) => text
                .split(',')
                .map(|part| parse_status(part.trim()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    CliError::new(format!("`{text}` is not a status filter"))
                        .hint("Use a status (`404`), a class (`5xx`), or several with commas (`404,5xx`).")
                })?,
        };
        Ok(Filter {
            host: args.host.as_deref().map(|host| host_key(host).into_owned()),
            statuses,
        })
    }

    fn keeps(&self, record: &RequestRecord) -> bool {
        let host_ok = self
            .host
            .as_ref()
            .is_none_or(|host| host_key(&record.host) == host.as_str());
        let status_ok = self.statuses.is_empty()
            || self.statuses.iter().any(|pattern| match pattern {
                StatusPattern::Exact(status) => record.status == *status,
                StatusPattern::Class(class) => record.status / 100 == *class,
            });
        host_ok && status_ok
    }
}

fn parse_status(text: &str) -> Option<StatusPattern> {
    let lower = text.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        let class: u16 = class.parse().ok()?;
        return (1..=5)
            .contains(&class)
            .then_some(StatusPattern::Class(class));
    }
    let status: u16 = lower.parse().ok()?;
    (100..=599)
        .contains(&status)
        .then_some(StatusPattern::Exact(status))
}

/// The `--json` line: exactly the documented fields, in this order.
#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    bytes_in: u64,
    bytes_out: u64,
    alias: Option<&'a str>,
    rule: Option<u32>,
    deployment: Option<&'a str>,
    instance: Option<u32>,
    session: Option<&'a str>,
}

fn print_record(record: &RequestRecord, json: bool) {
    if json {
        let line = JsonLine {
            time: &record.time,
            method: &record.method,
            host: &record.host,
            path: &record.path,
            status: record.status,
            duration_ms: record.duration_ms,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            alias: record.alias.as_deref(),
            rule: record.rule,
            deployment: record.deployment.as_deref(),
            instance: record.instance,
            session: record.session.as_deref(),
        };
        println!(
            "{}",
            serde_json::to_string(&line).expect("a request record serialises")
        );
        return;
    }
    let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let served_by = match (&record.deployment, record.instance) {
        (Some(deployment), Some(instance)) => format!("{deployment}.{instance}"),
        (Some(deployment), None) => deployment.clone(),
        _ => "-".into(),
    };
    println!(
        "{}  {} {:<7} {}{}  {:>7.1}ms  {:>6}B  rule {}  {}  session {}",
        record.time,
        record.status,
        record.method,
        record.host,
        record.path,
        record.duration_ms,
        record.bytes_out,
        dash(record.rule.map(|rule| rule.to_string())),
        served_by,
        dash(record.session.clone()),
    );
}
