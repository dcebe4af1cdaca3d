//! `stack alias`: point a host at a rules file (a path alias) or at a service or deployment (a
//! plain alias), list aliases, show one alias's rules, remove one.
//!
//! Validation happens here, before anything is stored: a bad rules file is reported whole and
//! changes nothing. Storing goes through [`apply`]: live through the running `stack up`'s control
//! socket, or recorded in `.stack/state.json` for the next one.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use crate::args::{AliasArgs, AliasCommand};
use crate::control::api::{http_url, https_url};
use crate::control::{self, AliasChange, Applied};
use crate::output::{self, CliError, CliResult};
use crate::rules::{
    Dest, Position, RuleError, RuleErrorKind, RuleFileErrors, RuleSet, MAX_FILE_BYTES,
};
use crate::state::aliases::{normalize_host, now_millis, owner_of, plural, AliasTarget, HostOwner};
use crate::state::{Alias, State};

pub fn run(project_dir: &Path, args: AliasArgs) -> CliResult<ExitCode> {
    match (args.command, args.host, args.target, args.rules) {
        (Some(AliasCommand::Ls { host: None, json }), ..) => list(project_dir, json),
        (Some(AliasCommand::Ls { host: Some(host), json }), ..) => show(project_dir, &host, json),
        (Some(AliasCommand::Rm { host }), ..) => remove(project_dir, &host),
        (None, Some(host), None, Some(file)) => set_rules(project_dir, &host, &file),
        (None, Some(host), Some(target), None) => set_plain(project_dir, &host, &target),
        (None, Some(host), None, None) => Err(CliError::new(format!(
            "`stack alias {host}` needs to know what `{host}` points at"
        ))
        .hint(format!(
            "Run `stack alias {host} --rules aliases.json` or `stack alias {host} <service or deployment>`."
        ))),
        (None, None, ..) => Err(CliError::new("`stack alias` needs a host")
            .hint("Run `stack alias <host> --rules <file>`, `stack alias ls` or `stack alias --help`.")),
        (None, Some(_), Some(_), Some(_)) => {
            unreachable!("clap rejects a target together with --rules")
        }
    }
}

fn host_arg(host: &str) -> CliResult<String> {
    normalize_host(host).map_err(|error| {
        CliError::new(error.to_string()).hint("Use a host name such as `counter-demo.localhost`.")
    })
}

/// The host an alias is being set on, unless a service, a deployment or the dashboard owns it
/// (known from `services/` and the recorded deployments; a running `stack up` checks what it
/// runs too).
fn free_host_arg(project_dir: &Path, host: &str) -> CliResult<String> {
    let host = host_arg(host)?;
    let state = load(project_dir)?;
    let discovered: Vec<String> = crate::config::service_names(project_dir);
    let services = discovered
        .iter()
        .chain(state.deployments.keys())
        .map(String::as_str);
    let deployments = state
        .deployments
        .values()
        .flat_map(|history| &history.deployments)
        .map(|record| record.id.as_str());
    match owner_of(&host, services, deployments) {
        Some(owner) => Err(host_taken(&owner)),
        None => Ok(host),
    }
}

/// The refusal of an alias on a host something else owns.
pub(crate) fn host_taken(owner: &HostOwner) -> CliError {
    CliError::new(format!("{owner}; an alias cannot take it over"))
        .hint("Pick another host name (such as `counter-demo.localhost`). Nothing was changed.")
}

fn set_rules(project_dir: &Path, host: &str, file: &Path) -> CliResult<ExitCode> {
    let host = free_host_arg(project_dir, host)?;
    let name = file.display().to_string();
    // A file past the limit is refused before it is read whole.
    if let Ok(metadata) = fs::metadata(project_dir.join(file)) {
        let size = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
        if size > MAX_FILE_BYTES {
            let too_large = RuleFileErrors {
                file: name.clone(),
                errors: vec![RuleError {
                    position: Position { line: 1, column: 1 },
                    rule: None,
                    kind: RuleErrorKind::TooLarge(size),
                }],
            };
            return Err(file_errors(&host, &name, &too_large));
        }
    }
    let text = match fs::read_to_string(project_dir.join(file)) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(
                CliError::new(format!("`{name}`: file not found")).hint(format!(
                    "Check the path; it is read relative to the project directory `{}`.",
                    project_dir.display()
                )),
            )
        }
        Err(error) => {
            return Err(CliError::new(format!("cannot read `{name}`: {error}")).hint(
                "Give `--rules` a readable JSON file of now's rules (`{\"rules\": [{\"pathname\": \"/api/**\", \"dest\": \"api\"}]}`); nothing was changed.",
            ))
        }
    };
    let loaded =
        RuleSet::parse(&name, &text).map_err(|errors| file_errors(&host, &name, &errors))?;
    for warning in &loaded.warnings {
        output::warn(warning);
    }
    let n_rules = loaded.rules.rules().len();
    // The rules, not the file's text: whitespace and comments-by-key cost nothing in the state.
    let alias = Alias::new(AliasTarget::Rules {
        file: name,
        text: loaded.rules.to_json(),
        positions: loaded.rules.positions(),
    });
    let applied = apply(
        project_dir,
        AliasChange::Set {
            host: host.clone(),
            alias,
        },
    )?;
    output::success(format!("{} configured for {host}", plural(n_rules, "rule")));
    say_where(applied);
    if applied == Applied::Recorded {
        let names = loaded
            .rules
            .rules()
            .iter()
            .filter_map(|rule| match &rule.dest {
                Dest::Local(name) => Some(name.as_str()),
                _ => None,
            });
        warn_unknown(project_dir, &host, names);
    }
    Ok(ExitCode::SUCCESS)
}

/// Recorded with no `stack up` to check them: a local `dest` that names no service,
/// deployment or alias of the project is said now, not found out as a 502 later.
fn warn_unknown<'a>(project_dir: &Path, host: &str, names: impl Iterator<Item = &'a str>) {
    let Ok(state) = State::load(project_dir) else {
        return;
    };
    let services = crate::config::service_names(project_dir);
    let mut unknown: Vec<&str> = names
        .filter(|name| {
            let name = name.strip_suffix(".localhost").unwrap_or(name);
            !services.iter().any(|service| service == name)
                && state.resolve_deployment(name).is_none()
                && !state.aliases.contains_key(&format!("{name}.localhost"))
                && !state.aliases.contains_key(name)
                && format!("{name}.localhost") != host
        })
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        let quoted: Vec<String> = unknown.iter().map(|name| format!("`{name}`")).collect();
        output::warn(format!(
            "{} names no service, deployment or alias of this project: its requests will get 502 until one does",
            quoted.join(", ")
        ));
    }
}

/// Every error of the file, one per line, and the promise that nothing changed.
fn file_errors(host: &str, name: &str, errors: &RuleFileErrors) -> CliError {
    let message = if errors.errors.len() == 1 {
        errors.to_string()
    } else {
        let mut message = format!("`{name}` has {} errors:", errors.errors.len());
        for line in errors.to_string().lines() {
            let _ = write!(message, "\n  {line}");
        }
        message
    };
    CliError::new(message).hint(format!(
        "Nothing was changed. Fix the file and run `stack alias {host} --rules {name}` again."
    ))
}

fn set_plain(project_dir: &Path, host: &str, target: &str) -> CliResult<ExitCode> {
    let host = free_host_arg(project_dir, host)?;
    match Dest::parse(target) {
        Ok(Dest::Local(_)) => {}
        Ok(_) => {
            return Err(CliError::new(format!(
                "`{target}` is not a service or deployment of this stack"
            ))
            .hint(format!(
                "A plain alias points inside the stack; to send `{host}` elsewhere, use a rules file: {{\"rules\": [{{\"dest\": \"{target}\"}}]}}"
            )))
        }
        Err(reason) => {
            return Err(CliError::new(format!("`{target}` {reason}"))
                .hint("Name a service (`writer`) or a deployment (`writer-gkdldldejq`)."))
        }
    }
    let alias = Alias::new(AliasTarget::Plain {
        target: target.to_string(),
    });
    let applied = apply(
        project_dir,
        AliasChange::Set {
            host: host.clone(),
            alias,
        },
    )?;
    output::success(format!("{host} now points to {target}"));
    say_where(applied);
    if applied == Applied::Recorded {
        warn_unknown(project_dir, &host, std::iter::once(target));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends the change to the running `stack up` (which checks every `dest` against what runs and
/// swaps its routing table, all or nothing), or records it for the next `stack up`; then says
/// which of the two happened, after the caller's success line.
fn apply(project_dir: &Path, change: AliasChange) -> CliResult<Applied> {
    let applied = control::apply_alias_change(project_dir, &change)?;
    tracing::info!(host = change.host(), ?applied, "alias change applied");
    Ok(applied)
}

fn say_where(applied: Applied) {
    match applied {
        Applied::Live => output::info("Applied live to the running `stack up`."),
        Applied::Recorded => {
            output::info("No `stack up` is running: the alias applies at the next `stack up`.")
        }
        Applied::AtStart => output::info(
            "`stack up` is still building: the alias applies as soon as its services start.",
        ),
    }
}

fn load(project_dir: &Path) -> CliResult<State> {
    State::load(project_dir).map_err(|error| CliError::new(error.to_string()))
}

/// One alias in `stack alias ls --json`: a plain alias has a `target`, a path alias a `file`.
#[derive(serde::Serialize)]
struct ListedAlias<'a> {
    host: &'a str,
    source: String,
    created: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<&'a str>,
}

fn list(project_dir: &Path, json: bool) -> CliResult<ExitCode> {
    let state = load(project_dir)?;
    if json {
        let aliases: Vec<ListedAlias<'_>> = state
            .aliases
            .iter()
            .map(|(host, alias)| {
                let (target, file) = match &alias.target {
                    AliasTarget::Plain { target } => (Some(target.as_str()), None),
                    AliasTarget::Rules { file, .. } => (None, Some(file.as_str())),
                };
                ListedAlias {
                    host,
                    source: alias.source(),
                    created: alias.created,
                    target,
                    file,
                }
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&aliases).expect("plain JSON values always serialise")
        );
        return Ok(ExitCode::SUCCESS);
    }
    match state.aliases.len() {
        1 => output::info("1 alias found"),
        n_aliases => output::info(format!("{n_aliases} aliases found")),
    }
    if state.aliases.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let now = now_millis();
    let mut rows = vec![["source".to_string(), "url".into(), "age".into()]];
    for (host, alias) in &state.aliases {
        // The URLs on the ports of the running or last `stack up`; the bare host before any.
        let http = state
            .proxy_port
            .map_or_else(|| host.clone(), |port| http_url(host, port));
        let url = match state.https_port {
            Some(port) => format!("{http} {}", https_url(host, port)),
            None => http,
        };
        rows.push([alias.source(), url, output::age(alias.created, now)]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

fn show(project_dir: &Path, host: &str, json: bool) -> CliResult<ExitCode> {
    let host = host_arg(host)?;
    let state = load(project_dir)?;
    let alias = find(&state, &host)?;
    let rules = alias.rule_set().map_err(|errors| {
        CliError::new(format!(
            "the stored rules of `{host}` no longer load:\n{errors}"
        ))
        .hint(format!(
            "Set them again with `stack alias {host} --rules <file>`."
        ))
    })?;
    if json {
        print!("{}", rules.to_json());
        return Ok(ExitCode::SUCCESS);
    }
    let from = match &alias.target {
        AliasTarget::Rules { file, .. } => format!(" (from {file})"),
        AliasTarget::Plain { .. } => " (a plain alias)".into(),
    };
    output::info(format!(
        "{} for {host}{from}",
        plural(rules.rules().len(), "rule")
    ));
    let mut rows = vec![["pathname".to_string(), "method".into(), "dest".into()]];
    for rule in rules.rules() {
        rows.push([
            rule.pathname_display().to_string(),
            rule.methods_display(),
            rule.dest.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

fn remove(project_dir: &Path, host: &str) -> CliResult<ExitCode> {
    let host = host_arg(host)?;
    find(&load(project_dir)?, &host)?;
    let applied = apply(project_dir, AliasChange::Remove { host: host.clone() })?;
    output::success(format!("Alias {host} removed"));
    say_where(applied);
    Ok(ExitCode::SUCCESS)
}

/// The alias stored under `host`, or an error that lists the ones that exist.
pub(crate) fn find<'a>(state: &'a State, host: &str) -> CliResult<&'a Alias> {
    state.aliases.get(host).ok_or_else(|| {
        let known: Vec<&str> = state.aliases.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "There are no aliases yet; set one with `stack alias <host> --rules <file>`."
                .to_string()
        } else {
            format!("Aliases: {}.", known.join(", "))
        };
        CliError::new(format!("no alias `{host}`")).hint(hint)
    })
}

/// Left-aligned columns two spaces apart, indented two spaces, no trailing spaces.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
