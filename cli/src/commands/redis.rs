//! `stack redis keys|get|del|flush|watch`: look inside the session store without redis-cli.
//!
//! Glue only: finds the Redis ([`crate::redis::locate`]), calls [`crate::redis::inspect`] and
//! [`crate::redis::watch`], and prints tables, JSON and now's messages. The URL is shown masked
//! everywhere; `SESSION_SECRET` is never shown.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use console::style;
use serde_json::{json, Value};

use crate::args::{RedisArgs, RedisCommand};
use crate::output::{self, CliError, CliResult};
use crate::redis::inspect::{self, Entry, InspectError, Inspector, Summary};
use crate::redis::locate::{self, LocateError, Located, SecretList, Variables};
use crate::redis::lookup::{self, SessionRef, Signature};
use crate::redis::pretty;
use crate::redis::watch::{self, Change, ChangeKind, FeedError, FieldChange};
use crate::state::{secret, STATE_DIR};

/// Widest a value gets in a table cell or a watch line.
const CELL_WIDTH: usize = 40;

pub fn run(cwd: &Path, args: RedisArgs) -> CliResult<ExitCode> {
    let variables = Variables::load(cwd, args.dotenv.as_deref()).map_err(locate_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::new(format!("cannot start the async runtime: {error}")))?;
    match args.command {
        RedisCommand::Keys { pattern, json } => {
            let located = locate::locate(cwd, &variables).map_err(locate_error)?;
            runtime.block_on(keys(&located, &pattern, json))
        }
        RedisCommand::Get { what, json } => get(cwd, &runtime, &variables, &what, json),
        RedisCommand::Del { ids } => {
            let located = locate::locate(cwd, &variables).map_err(locate_error)?;
            runtime.block_on(del(&located, &ids))
        }
        RedisCommand::Flush { yes } => {
            let located = locate::locate(cwd, &variables).map_err(locate_error)?;
            flush(&runtime, &located, yes)
        }
        RedisCommand::Watch => {
            let located = locate::locate(cwd, &variables).map_err(locate_error)?;
            runtime.block_on(watch(located))
        }
    }
}

fn locate_error(error: LocateError) -> CliError {
    CliError::new(error.to_string()).hint(error.hint())
}

/// An unreachable or failing Redis, with the masked URL, where it came from and what to do.
fn inspect_error(located: &Located, error: InspectError) -> CliError {
    let hint = match (&error, &located.source) {
        (InspectError::BadTlsCaFile(_), _) => {
            "Point REDIS_TLS_CA_FILE at a readable PEM file holding the CA certificate that signed the Redis server's certificate, or unset it to trust the public CA roots."
                .to_owned()
        }
        (InspectError::Unreachable { reason, .. }, _)
            if located.url.is_tls() && reason.contains("certificate") =>
        {
            "The server's TLS certificate is not trusted: set REDIS_TLS_CA_FILE to the PEM file of the CA that signed it.".to_owned()
        }
        (InspectError::WrongKind { .. }, _) => {
            "Use `redis://host:port` for a single server, `redis-cluster://host:port,...` for the nodes of a cluster, `redis-sentinel://host:port,...#master` for the sentinels (26379 by default) of a Sentinel set.".to_owned()
        }
        (InspectError::Auth { .. }, locate::UrlSource::StackUp) => {
            "The running `stack up` gives its services this URL, whatever REDIS_SESSION_URL says here: stop it and start it again with the right password in REDIS_SESSION_URL.".to_owned()
        }
        (InspectError::Auth { .. }, _) => {
            "Put the right password in REDIS_SESSION_URL (`redis://:PASSWORD@host:port`, or `?password=`), in the environment or a file given with `--dotenv FILE`.".to_owned()
        }
        (_, locate::UrlSource::StackUp) => {
            "The running `stack up` manages this Redis: check `stack logs`, or restart `stack up`."
                .to_owned()
        }
        _ => "Start the stack with `stack up` (it runs a managed Redis), or set REDIS_SESSION_URL (in the environment or a file given with `--dotenv FILE`) to the Redis your services use.".to_owned(),
    };
    CliError::new(error.to_string()).hint(format!("(That URL is from {}.) {hint}", located.source))
}

async fn connect(located: &Located) -> CliResult<Inspector> {
    Inspector::connect(&located.url)
        .await
        .map_err(|error| inspect_error(located, error))
}

async fn keys(located: &Located, pattern: &str, as_json: bool) -> CliResult<ExitCode> {
    let started = Instant::now();
    let mut inspector = connect(located).await?;
    let mut summaries: Vec<Summary> = Vec::new();
    inspector
        .scan(pattern, |batch| {
            summaries.extend(batch.iter().map(Entry::summary));
        })
        .await
        .map_err(|error| inspect_error(located, error))?;
    summaries.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    // SCAN may hand a key over twice; sorted, the copies are neighbours.
    summaries.dedup_by(|a, b| a.id == b.id);
    let pattern = inspect::session_pattern(pattern);
    let total_bytes: u64 = summaries.iter().map(|s| s.size as u64).sum();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if as_json {
        let document = json!({
            "redis": located.url.to_string(),
            "pattern": pattern,
            "total": summaries.len(),
            "bytes": total_bytes,
            "sessions": summaries,
        });
        let text = serde_json::to_string_pretty(&document).expect("JSON values always serialise");
        let written =
            writeln!(out, "{}", output::terminal_safe_json_lines(&text)).and_then(|()| out.flush());
        stdout_written(written)?;
        return Ok(ExitCode::SUCCESS);
    }
    if summaries.is_empty() {
        drop(out);
        output::info(format!(
            "No sessions matching `{pattern}` in {} [{}ms]",
            located.url,
            started.elapsed().as_millis()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = summaries
        .iter()
        .map(|summary| {
            // Keys and values are anyone's who can write to Redis: never raw on a terminal.
            let user = match (&summary.user, summary.problem) {
                (_, Some(problem)) => format!("({problem})"),
                (Some(user), None) => {
                    pretty::shorten(&output::terminal_safe_json(user.get()), CELL_WIDTH)
                }
                (None, None) => "-".into(),
            };
            let fields = if summary.fields.is_empty() {
                "-".into()
            } else {
                pretty::shorten(&output::printable(&summary.fields.join(",")), CELL_WIDTH)
            };
            [
                output::printable(&summary.id).into_owned(),
                pretty::ttl(summary.ttl),
                user,
                fields,
                pretty::size(summary.size as u64),
            ]
        })
        .collect();
    let header = ["ID", "TTL", "USER", "FIELDS", "SIZE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[index] - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
        }
        text
    };
    let header_line = line(&header.map(str::to_owned));
    let written = writeln!(out, "{}", style(header_line).dim())
        .and_then(|()| {
            rows.iter()
                .try_for_each(|row| writeln!(out, "{}", line(row)))
        })
        .and_then(|()| out.flush());
    drop(out);
    if !stdout_written(written)? {
        return Ok(ExitCode::SUCCESS);
    }
    let n_users = summaries.iter().filter(|s| s.user.is_some()).count();
    output::info(format!(
        "{} in {} ({} with a user, {}) [{}ms]",
        plural(summaries.len(), "session"),
        located.url,
        n_users,
        pretty::size(total_bytes),
        started.elapsed().as_millis()
    ));
    Ok(ExitCode::SUCCESS)
}

/// The secrets a cookie is checked with: `SESSION_SECRET` as given here (environment or
/// `--dotenv`), else the running `stack up`'s (what its services sign with), else the one a
/// `stack up` generated for this project.
fn cookie_secrets(cwd: &Path, variables: &Variables, located: &Located) -> CliResult<SecretList> {
    if let Some(secrets) = variables.secrets().map_err(locate_error)? {
        return Ok(secrets);
    }
    if let Some(secrets) = &located.stack_secrets {
        return Ok(secrets.clone());
    }
    let generated = secret::load(&cwd.join(STATE_DIR))
        .map_err(|error| CliError::new(format!("cannot read `.stack/session-secret`: {error}")))?;
    generated
        .and_then(|value| SecretList::parse(&value).ok())
        .ok_or_else(|| {
            CliError::new(
                "a signed cookie was given, but no `SESSION_SECRET` is set here, no `stack up` runs in this project and it has no generated one, so its signature cannot be checked",
            )
            .hint("Set SESSION_SECRET in the environment or in a file given with `--dotenv FILE`, or give the session id itself.")
        })
}

fn get(
    cwd: &Path,
    runtime: &tokio::runtime::Runtime,
    variables: &Variables,
    what: &str,
    as_json: bool,
) -> CliResult<ExitCode> {
    let reference = SessionRef::parse(what).map_err(|error| {
        CliError::new(output::printable(&error.to_string())).hint(
            "Give a session id (`stack redis keys` lists them), a cookie value `s%3A...` or a header `connect.sid=s%3A...`.",
        )
    })?;
    let located = locate::locate(cwd, variables).map_err(locate_error)?;
    // A signed cookie is judged before Redis is asked anything: one that does not verify is
    // never looked up (as express-session does).
    let (id, cookie) = match reference {
        SessionRef::Id(id) => (id, None),
        SessionRef::Signed(signed) => {
            let secrets = cookie_secrets(cwd, variables, &located)?;
            match lookup::verify(&signed, &secrets) {
                Signature::Valid {
                    id,
                    secret,
                    n_secrets,
                } => (id, Some((secret, n_secrets))),
                Signature::Invalid {
                    claimed_id,
                    n_secrets,
                } => {
                    if as_json {
                        let text = json!({"cookie": {"valid": false, "claimed_id": claimed_id}});
                        println!("{}", output::terminal_safe_json(&text.to_string()));
                    }
                    let claimed = claimed_id.as_deref().map_or("no id".to_owned(), |id| {
                        format!("session `{}`", output::printable(id))
                    });
                    let hint = match &claimed_id {
                        Some(id) => format!(
                            "It was altered, or signed with another secret: check SESSION_SECRET. To look the id up regardless: `stack redis get {}`.",
                            output::printable(id)
                        ),
                        None => "It was altered, or signed with another secret: check SESSION_SECRET.".to_owned(),
                    };
                    return Err(CliError::new(format!(
                        "the cookie does NOT verify against SESSION_SECRET ({} tried); it claims {claimed}, which was not looked up",
                        plural(n_secrets, "secret")
                    ))
                    .hint(hint));
                }
            }
        }
    };
    let entry = runtime.block_on(async {
        let mut inspector = connect(&located).await?;
        inspector
            .get(&id)
            .await
            .map_err(|error| inspect_error(&located, error))
    })?;
    let Some(entry) = entry else {
        if as_json {
            let text = json!({"id": id, "found": false, "cookie": cookie.map(|(secret, _)| json!({"valid": true, "secret": secret}))});
            println!("{}", output::terminal_safe_json(&text.to_string()));
        }
        return Err(CliError::new(format!(
            "no session `{}` in {} (it expired, was deleted, or never existed)",
            output::printable(&id),
            located.url
        ))
        .hint("List the sessions with `stack redis keys`."));
    };
    let session: Value = match entry.parse() {
        Ok(map) => Value::Object(map),
        Err(_) => entry.value.clone().map_or(Value::Null, Value::String),
    };
    if as_json {
        let document = json!({
            "id": entry.id,
            "key": format!("{}{}", session::id::KEY_PREFIX, entry.id),
            "found": true,
            "ttl": entry.ttl.seconds(),
            "size": entry.value.as_ref().map_or(0, String::len),
            "cookie": cookie.map(|(secret, _)| json!({"valid": true, "secret": secret})),
            "session": session,
        });
        let text = serde_json::to_string_pretty(&document).expect("JSON values always serialise");
        println!("{}", output::terminal_safe_json_lines(&text));
        return Ok(ExitCode::SUCCESS);
    }
    if let Some((secret, n_secrets)) = cookie {
        output::info(format!(
            "Cookie verifies (valid, signed with secret {secret} of {n_secrets}): it names session `{}`",
            output::printable(&entry.id)
        ));
    }
    let problem = entry
        .parse()
        .err()
        .map(|problem| format!(" ({problem})"))
        .unwrap_or_default();
    output::info(format!(
        "Session `{}` in {}: TTL {}, {}{problem}",
        output::printable(&entry.id),
        located.url,
        pretty::ttl(entry.ttl.seconds()),
        pretty::size(entry.value.as_ref().map_or(0, String::len) as u64),
    ));
    println!("{}", pretty::json(&session));
    Ok(ExitCode::SUCCESS)
}

async fn del(located: &Located, ids: &[String]) -> CliResult<ExitCode> {
    let mut clean = Vec::with_capacity(ids.len());
    for id in ids {
        match SessionRef::parse(id) {
            Ok(SessionRef::Id(id)) => clean.push(id),
            _ => {
                return Err(CliError::new(format!("`{}` is not a session id", output::printable(id)))
                    .hint("Give ids as `stack redis keys` lists them (a `sess:` prefix is fine). Nothing was deleted."))
            }
        }
    }
    let mut inspector = connect(located).await?;
    let existed = inspector
        .delete(&clean)
        .await
        .map_err(|error| inspect_error(located, error))?;
    let missing: Vec<&String> = clean
        .iter()
        .zip(&existed)
        .filter(|(_, existed)| !**existed)
        .map(|(id, _)| id)
        .collect();
    let n_deleted = existed.iter().filter(|existed| **existed).count();
    if n_deleted == 0 {
        return Err(CliError::new(format!(
            "no such session in {}: {}",
            located.url,
            quoted_list(&missing)
        ))
        .hint("List the sessions with `stack redis keys`."));
    }
    output::success(format!(
        "Deleted {} from {}",
        plural(n_deleted, "session"),
        located.url
    ));
    if !missing.is_empty() {
        output::warn(format!("no such session: {}", quoted_list(&missing)));
    }
    Ok(ExitCode::SUCCESS)
}

fn flush(runtime: &tokio::runtime::Runtime, located: &Located, yes: bool) -> CliResult<ExitCode> {
    let started = Instant::now();
    let mut inspector = runtime.block_on(connect(located))?;
    let n_sessions = runtime
        .block_on(inspector.count())
        .map_err(|error| inspect_error(located, error))?;
    if n_sessions == 0 {
        output::info(format!("No sessions in {}: nothing to delete", located.url));
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::new(format!(
                "`stack redis flush` would delete {} in {} and needs a confirmation, but there is no terminal to ask on",
                plural(n_sessions, "session"),
                located.url
            ))
            .hint("Run `stack redis flush --yes` to confirm. Nothing was deleted."));
        }
        eprint!(
            "{} Delete {} (every `sess:*` key) in {}? Every user is logged out. [y/N] ",
            style(">").dim(),
            plural(n_sessions, "session"),
            located.url
        );
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|error| CliError::new(format!("cannot read the answer: {error}")))?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            output::info("Nothing was deleted");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let n_deleted = runtime
        .block_on(inspector.flush())
        .map_err(|error| inspect_error(located, error))?;
    output::success(format!(
        "Deleted {} from {} [{}ms]",
        plural(n_deleted as usize, "session"),
        located.url,
        started.elapsed().as_millis()
    ));
    Ok(ExitCode::SUCCESS)
}

async fn watch(located: Located) -> CliResult<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before anything else, so a Ctrl-C at any point ends the feed cleanly.
    let signal_error =
        |error: std::io::Error| CliError::new(format!("cannot watch for Ctrl-C: {error}"));
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let stop = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    let inspector = connect(&located).await?;
    let url = located.url.to_string();
    let result = watch::run(
        inspector,
        |n_known| {
            output::info(format!(
                "Watching sessions in {url} ({} known; times in UTC; Ctrl-C to stop)",
                n_known
            ))
        },
        |change| println!("{}", change_line(SystemTime::now(), &change)),
        |link| match link {
            watch::Link::Lost => output::warn(format!(
                "lost the connection to {url} (a restart or a failover?); reconnecting"
            )),
            watch::Link::Back(n_known) => output::info(format!(
                "Reconnected to {url} ({n_known} known; changes made meanwhile are not shown)"
            )),
        },
        stop,
    )
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(FeedError::Inspect(error)) => Err(inspect_error(&located, error)),
        Err(error) => {
            let hint = error.hint();
            Err(CliError::new(error.to_string()).hint(hint))
        }
    }
}

/// `12:00:01  changed  <id>  count 1 → 2, cookie.expires null → "..."`.
fn change_line(time: SystemTime, change: &Change) -> String {
    let kind = format!("{:<7}", change.kind.word());
    let kind = match change.kind {
        ChangeKind::Created => style(kind).green(),
        ChangeKind::Changed => style(kind).yellow(),
        ChangeKind::Deleted => style(kind).red(),
        ChangeKind::Expired | ChangeKind::Evicted => style(kind).dim(),
    };
    // Names and values are anyone's who can write to Redis: never raw on a terminal.
    let short = |value: &str| pretty::shorten(&output::terminal_safe_json(value), CELL_WIDTH);
    let name = |name: &str| output::printable(name).into_owned();
    let details: Vec<String> = match change.kind {
        ChangeKind::Created => change
            .fields
            .iter()
            .filter_map(|field| match field {
                FieldChange::Added { name: field, value } if field != "cookie" => {
                    Some(format!("{} {}", name(field), short(value)))
                }
                _ => None,
            })
            .collect(),
        ChangeKind::Changed => change
            .fields
            .iter()
            .map(|field| match field {
                FieldChange::Added { name: field, value } => {
                    format!("{} added {}", name(field), short(value))
                }
                FieldChange::Removed { name: field, value } => {
                    format!("{} removed (was {})", name(field), short(value))
                }
                FieldChange::Changed {
                    name: field,
                    old,
                    new,
                } => {
                    format!("{} {} → {}", name(field), short(old), short(new))
                }
            })
            .collect(),
        ChangeKind::Deleted | ChangeKind::Expired | ChangeKind::Evicted => {
            let names: Vec<String> = change
                .fields
                .iter()
                .filter_map(|field| match field {
                    FieldChange::Removed { name: field, .. } if field != "cookie" => {
                        Some(name(field))
                    }
                    _ => None,
                })
                .collect();
            if names.is_empty() {
                Vec::new()
            } else {
                vec![format!("had {}", names.join(", "))]
            }
        }
    };
    let details = if details.is_empty() && change.kind == ChangeKind::Changed {
        "saved, no field changed".to_owned()
    } else {
        details.join(", ")
    };
    format!(
        "{}  {kind}  {}  {details}",
        pretty::time_of_day(time),
        output::printable(&change.id)
    )
    .trim_end()
    .to_owned()
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn quoted_list(items: &[&String]) -> String {
    items
        .iter()
        .map(|item| format!("`{}`", output::printable(item)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when the output went out; false when the reader left early (`stack redis keys | head`),
/// which is not an error.
fn stdout_written(result: std::io::Result<()>) -> CliResult<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(CliError::new(format!("cannot write to stdout: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn watch_lines_say_what_changed() {
        console::set_colors_enabled(false);
        let at = UNIX_EPOCH + Duration::from_secs(3723);
        let line = |kind, fields| {
            change_line(
                at,
                &Change {
                    id: "abc".into(),
                    kind,
                    fields,
                },
            )
        };
        let count = |old: &str, new: &str| FieldChange::Changed {
            name: "count".into(),
            old: old.into(),
            new: new.into(),
        };
        assert_eq!(
            line(
                ChangeKind::Created,
                vec![
                    FieldChange::Added {
                        name: "cookie".into(),
                        value: "{}".into()
                    },
                    FieldChange::Added {
                        name: "user".into(),
                        value: r#"{"id":0.5}"#.into()
                    }
                ]
            ),
            r#"01:02:03  created  abc  user {"id":0.5}"#
        );
        assert_eq!(
            line(ChangeKind::Changed, vec![count("1", "2")]),
            "01:02:03  changed  abc  count 1 → 2"
        );
        assert_eq!(
            line(ChangeKind::Changed, vec![]),
            "01:02:03  changed  abc  saved, no field changed"
        );
        assert_eq!(
            line(
                ChangeKind::Deleted,
                vec![FieldChange::Removed {
                    name: "user".into(),
                    value: "{}".into()
                }]
            ),
            "01:02:03  deleted  abc  had user"
        );
        assert_eq!(line(ChangeKind::Expired, vec![]), "01:02:03  expired  abc");
    }
}
