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
    // The host and path column is as wide as the longest of the first screen (within bounds),
    // and keeps that width while following.
    let width = column_width(matching[first..].iter().copied());
    for record in &matching[first..] {
        print_record(record, args.json, width);
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
            print_record(record, args.json, width);
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

/// Narrowest and widest the host and path column is padded to.
const MIN_WIDTH: usize = 24;
const MAX_WIDTH: usize = 72;

/// The host and path column's width for `records`: the longest, within the bounds.
fn column_width<'a>(records: impl Iterator<Item = &'a RequestRecord>) -> usize {
    records
        .map(|record| {
            output::printable(&record.host).chars().count()
                + output::printable(&record.path).chars().count()
        })
        .max()
        .unwrap_or(0)
        .clamp(MIN_WIDTH, MAX_WIDTH)
}

fn print_record(record: &RequestRecord, json: bool, width: usize) {
    if json {
        println!("{}", json_line(record));
    } else {
        println!("{}", table_row(record, width));
    }
}

/// One `--json` line. serde_json escapes C0 controls; the C1 ones (U+0080 to U+009F, which
/// some terminals obey as escape sequences when printed in UTF-8), DEL and the
/// bidirectional overrides are escaped too (`\u009b`), so a line is safe on a terminal and
/// still the same JSON.
fn json_line(record: &RequestRecord) -> String {
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
    let text = serde_json::to_string(&line).expect("a request record serialises");
    output::terminal_safe_json(&text).into_owned()
}

/// One line of the table; every field the request chose is [`output::printable`].
fn table_row(record: &RequestRecord, width: usize) -> String {
    let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    let served_by = match (&record.deployment, record.instance) {
        (Some(deployment), Some(instance)) => format!("{deployment}.{instance}"),
        (Some(deployment), None) => deployment.clone(),
        _ => "-".into(),
    };
    let target = format!(
        "{}{}",
        output::printable(&record.host),
        output::printable(&record.path)
    );
    format!(
        "{}  {} {:<7} {:<width$}  {:>7.1}ms  {:>6}B  rule {}  {}  session {}",
        output::printable(&record.time),
        record.status,
        output::printable(&record.method),
        target,
        record.duration_ms,
        record.bytes_out,
        dash(record.rule.map(|rule| rule.to_string())),
        output::printable(&served_by),
        output::printable(&dash(record.session.clone())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(host: &str, path: &str) -> RequestRecord {
        RequestRecord {
            seq: 1,
            time: "2026-01-01T00:00:00.000Z".into(),
            method: "GET".into(),
            host: host.into(),
            path: path.into(),
            status: 400,
            duration_ms: 1.0,
            bytes_in: 0,
            bytes_out: 10,
            alias: None,
            rule: None,
            deployment: None,
            instance: None,
            session: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn control_characters_are_printed_as_escapes() {
        for (raw, shown) in [
            ("/plain", "/plain"),
            ("/\u{1b}[2J", "/\\x1b[2J"),
            ("/\u{9b}31m", "/\\u{9b}31m"),
            ("/a\u{7f}b", "/a\\x7fb"),
            ("/\u{7}\r\n", "/\\x07\\x0d\\x0a"),
            ("/\u{202e}gpj.exe", "/\\u{202e}gpj.exe"),
            ("/back\\slash", "/back\\\\slash"),
            ("/café", "/café"),
        ] {
            assert_eq!(output::printable(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn a_table_row_escapes_every_field_and_pads_the_target() {
        let mut evil = record("app.localhost", "/\u{9b}2J\u{1b}]0;owned\u{7}");
        evil.method = "G\u{1b}T".into();
        evil.deployment = Some("app-\u{9b}x".into());
        let row = table_row(&evil, 40);
        assert!(!row.chars().any(output::is_unsafe_on_a_terminal), "{row:?}");
        assert!(
            row.contains("app.localhost/\\u{9b}2J\\x1b]0;owned\\x07"),
            "{row}"
        );
        assert!(row.contains("G\\x1bT"), "{row}");
        let short = table_row(&record("a.localhost", "/"), 40);
        let long = table_row(&record("a.localhost", "/a/longer/path"), 40);
        assert_eq!(short.find("ms"), long.find("ms"), "\n{short}\n{long}");
        assert_eq!(
            column_width([record("a.localhost", "/x")].iter()),
            MIN_WIDTH
        );
    }

    #[test]
    fn a_json_line_escapes_c1_and_del_and_stays_the_same_json() {
        let evil = record("app.localhost", "/\u{9b}2J\u{7f}\u{1b}\u{202e}");
        let line = json_line(&evil);
        assert!(
            !line.chars().any(output::is_unsafe_on_a_terminal),
            "{line:?}"
        );
        assert!(
            line.contains(r#""path":"/\u009b2J\u007f\u001b\u202e""#),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["path"], evil.path);
    }
}
