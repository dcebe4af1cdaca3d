//! `stack logs <service|deployment>[.N] [-f] [-n N] [--since T]`: stored lines, then live ones
//! with `-f`, from the running `stack up` (`-f` waits while it is still starting); without one,
//! what `.stack/logs/` holds. `reader.1` keeps instance 1's lines only.

use std::path::Path;
use std::process::ExitCode;

use crate::args::LogsArgs;
use crate::control::api::{self, LogsQuery, DEFAULT_LOG_LINES};
use crate::control::{Client, ControlError};
use crate::output::{self, CliError, CliResult};
use crate::state::State;
use crate::supervisor::logs::{self, LogLine};
use crate::units;

/// How often `-f` asks a starting `stack up` again.
const STARTING_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Which stored lines to print: the last `lines` of those from `since_ms` on.
struct Selection {
    lines: usize,
    since_ms: u64,
}

pub fn run(project_dir: &Path, args: LogsArgs) -> CliResult<ExitCode> {
    let since_ms = match &args.since {
        Some(text) => Some(parse_since(text, logs::now_ms())?),
        None => None,
    };
    let selection = Selection {
        // `--since` alone means every line since then, as `docker logs --since` does.
        lines: args.lines.unwrap_or(if since_ms.is_some() {
            usize::MAX
        } else {
            DEFAULT_LOG_LINES
        }),
        since_ms: since_ms.unwrap_or(0),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    runtime.block_on(logs_async(project_dir, &args, &selection))
}

async fn logs_async(
    project_dir: &Path,
    args: &LogsArgs,
    selection: &Selection,
) -> CliResult<ExitCode> {
    let client = Client::new(project_dir);
    let query = LogsQuery {
        target: args.target.clone(),
        lines: selection.lines,
        since_ms: selection.since_ms,
        follow: args.follow,
    };
    let mut waiting = false;
    let mut lines = loop {
        match client.logs(query.clone()).await {
            Ok(lines) => break lines,
            Err(ControlError::NotRunning { .. }) => return from_disk(project_dir, args, selection),
            // Still building: `-f` follows once the services are up, as `docker compose logs
            // -f` does during a start.
            Err(ControlError::Starting { .. }) if args.follow => {
                if !waiting {
                    output::note(
                        "`stack up` is still starting: following once its services are up",
                    );
                    waiting = true;
                }
                tokio::time::sleep(STARTING_POLL).await;
            }
            // Without `-f`, what an earlier run wrote is all there is; with nothing on disk yet,
            // "still starting" says more than "no such service".
            Err(starting @ ControlError::Starting { .. }) => {
                return from_disk(project_dir, args, selection).map_err(|_| starting.into())
            }
            Err(refused) => return Err(refused.into()),
        }
    };
    while let Some(line) = lines.next_line().await {
        print_line(&line);
    }
    Ok(ExitCode::SUCCESS)
}

fn from_disk(project_dir: &Path, args: &LogsArgs, selection: &Selection) -> CliResult<ExitCode> {
    let state = State::load(project_dir).map_err(|error| CliError::new(error.to_string()))?;
    // A service or deployment, else one instance of it (`reader.1`).
    let logs_dir = logs::logs_dir(project_dir);
    let Ok(found) = api::find_with_instance(&args.target, |target| {
        Ok::<_, std::convert::Infallible>(
            state
                .resolve_deployment(target)
                .or_else(|| logs::unkept_with_log(&logs_dir, target)),
        )
    });
    let Some((deployment, instance)) = found else {
        return Err(
            CliError::new(format!("no service or deployment named `{}`", args.target))
                .hint("See `stack ls` for the deployments."),
        );
    };
    let lines = logs::read_stored(
        &logs_dir,
        &deployment,
        selection.lines,
        selection.since_ms,
        instance,
    )
    .map_err(|error| CliError::new(format!("cannot read the logs of `{deployment}`: {error}")))?;
    if let Some(number) = instance.filter(|_| lines.is_empty()) {
        if !logs::has_lines_of(&logs_dir, &deployment, number) {
            return Err(CliError::new(format!(
                "`{deployment}` has no lines from instance {number}"
            ))
            .hint(format!("`stack logs {deployment}` prints every instance's lines, each prefixed with its name.")));
        }
    }
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

/// `--since T` as milliseconds since the Unix epoch: a duration back from `now_ms` (`90s`,
/// `10m`, `1h30m`, `2d`, `500ms`) or an RFC 3339 time (`2026-11-28T10:00:00Z`,
/// `2026-11-28 11:00:00.250+01:00`).
fn parse_since(text: &str, now_ms: u64) -> CliResult<u64> {
    let trimmed = text.trim();
    if let Some(back) = units::duration(trimmed) {
        return Ok(now_ms.saturating_sub(u64::try_from(back.as_millis()).unwrap_or(u64::MAX)));
    }
    rfc3339_ms(trimmed).ok_or_else(|| {
        CliError::new(format!(
            "`--since {text}` is neither a duration nor an RFC 3339 time"
        ))
        .hint("Use a duration back from now (`90s`, `10m`, `1h30m`, `2d`) or a time such as `2026-11-28T10:00:00Z`.")
    })
}

/// An RFC 3339 time as milliseconds since the Unix epoch (the session crate's parser, which
/// reads express-session's cookie dates); `None` for anything else, or before 1970.
fn rfc3339_ms(text: &str) -> Option<u64> {
    session::data::parse_iso8601_ms(text).and_then(|ms| u64::try_from(ms).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn since(text: &str) -> Option<u64> {
        parse_since(text, NOW).ok()
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(since("90s"), Some(NOW - 90_000));
        assert_eq!(since("10m"), Some(NOW - 600_000));
        assert_eq!(since("1h30m"), Some(NOW - 5_400_000));
        assert_eq!(since("2d"), Some(NOW - 172_800_000));
        assert_eq!(since("500ms"), Some(NOW - 500));
        assert_eq!(since(" 0s "), Some(NOW));
        assert_eq!(since("99999999d"), Some(0), "before 1970 is everything");
    }

    #[test]
    fn rfc3339_times_are_absolute() {
        assert_eq!(since("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(since("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(since("2026-11-28T10:00:00Z"), Some(1_795_860_000_000));
        assert_eq!(since("2026-11-28t10:00:00.25z"), Some(1_795_860_000_250));
        assert_eq!(
            since("2026-11-28 11:00:00.123456+01:00"),
            Some(1_795_860_000_123)
        );
        assert_eq!(since("2026-11-28T08:30:00-01:30"), Some(1_795_860_000_000));
        assert_eq!(since("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_that_work() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-5m",
            "yesterday",
            "2026-11-28",
            "2026-11-28T10:00:00",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:00:00.Z",
            "2026-11-28T10:00:00+1:00",
            "1969-12-31T23:59:59Z",
        ] {
            let error = parse_since(bad, NOW).expect_err(bad);
            assert!(
                error.to_string().contains("neither a duration"),
                "{bad}: {error}"
            );
        }
    }
}
