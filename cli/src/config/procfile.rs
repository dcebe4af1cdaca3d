//! A `Procfile` at the project's root, as foreman, overmind, honcho and Heroku read it: each
//! `name: command` line is a service that runs `command` through `sh -c` from the project's
//! root. A process that listens is told so by `PORT`: an entry named `web`, or whose command
//! uses `$PORT`, is a web service (a port, a URL, routes); every other one is a worker. As on
//! Heroku, `release` is a one-shot that every other entry waits to complete (a migration).
//! `stack.toml` gives an entry settings by naming it, as it does a detected service.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::{Builder, Condition, Kind, ResolvedService, Restart, Setting};
use super::{ConfigError, Position, DEFAULT_STOP_TIMEOUT};
use crate::config::model::CommandLine;
use crate::supervisor::build::Service;

/// The file's name, at the project's root.
pub const FILE: &str = "Procfile";
/// The entry every other one waits for.
const RELEASE: &str = "release";

/// One `name: command` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub command: String,
    /// From 1.
    pub line: usize,
    /// Of the command, from 1.
    pub column: usize,
}

/// The project's `Procfile` entries (none without the file), or every bad line.
pub fn load(project_dir: &Path) -> Result<Vec<Entry>, Vec<ConfigError>> {
    match std::fs::read_to_string(project_dir.join(FILE)) {
        Ok(text) => parse(&text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(vec![at(1, 1, format!("cannot be read: {error}"))]),
    }
}

fn at(line: usize, column: usize, message: String) -> ConfigError {
    ConfigError {
        file: FILE,
        position: Position { line, column },
        message,
    }
}

/// Blank lines and `#` comments are skipped; every other line is `name: command`.
pub fn parse(text: &str) -> Result<Vec<Entry>, Vec<ConfigError>> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let Some((name, command)) = trimmed.split_once(':') else {
            errors.push(at(
                number,
                indent + 1,
                "a line is `name: command` (for example `web: python3 app.py`)".into(),
            ));
            continue;
        };
        let (name, command) = (name.trim(), command.trim());
        if !super::parse::is_service_name(name) {
            errors.push(at(
                number,
                indent + 1,
                format!("`{name}` is not a service name: use lowercase letters, digits, `-` and `_` (it becomes `{name}.localhost`)"),
            ));
            continue;
        }
        if command.is_empty() {
            errors.push(at(
                number,
                line.len() + 1,
                format!("`{name}` has no command after the `:`"),
            ));
            continue;
        }
        if let Some(first) = entries.iter().find(|entry| entry.name == name) {
            errors.push(at(
                number,
                indent + 1,
                format!("`{name}` is already line {}", first.line),
            ));
            continue;
        }
        let after_colon = line.find(':').map_or(0, |colon| colon + 1);
        let command_column =
            after_colon + (line[after_colon..].len() - line[after_colon..].trim_start().len()) + 1;
        entries.push(Entry {
            name: name.into(),
            command: command.into(),
            line: number,
            column: line[..command_column - 1].chars().count() + 1,
        });
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// The entries whose name no service under `services/` has; each other one is an error.
pub fn without_conflicts(
    entries: Vec<Entry>,
    detected: &[Service],
    errors: &mut Vec<ConfigError>,
) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|entry| {
            let Some(service) = detected.iter().find(|service| service.name == entry.name) else {
                return true;
            };
            errors.push(at(
                entry.line,
                1,
                format!(
                    "`{}` is also the service in `{}/{}`: rename one of them",
                    entry.name,
                    crate::supervisor::build::SERVICES_DIR,
                    service
                        .dir
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                ),
            ));
            false
        })
        .collect()
}

/// Whether a command reads the port it is given: `$PORT` or `${PORT}` (`${PORT:-5000}`).
pub fn uses_port(command: &str) -> bool {
    let mut rest = command;
    while let Some(index) = rest.find('$') {
        rest = &rest[index + 1..];
        let name = rest.strip_prefix('{').unwrap_or(rest);
        if let Some(after) = name.strip_prefix("PORT") {
            let next = after.chars().next();
            if !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                return true;
            }
        }
    }
    false
}

/// Each entry as a service run from the project's root.
pub fn services(entries: &[Entry]) -> Vec<ResolvedService> {
    let has_release = entries.iter().any(|entry| entry.name == RELEASE);
    entries
        .iter()
        .map(|entry| {
            let origin = format!("{FILE}:{}", entry.line);
            let release = entry.name == RELEASE;
            let web = !release && (entry.name == "web" || uses_port(&entry.command));
            let kind_origin = if web {
                format!("{origin} (`web`, or its command uses `$PORT`)")
            } else {
                format!("{origin} (its command does not use `$PORT`)")
            };
            let mut depends_on = BTreeMap::new();
            if has_release && !release {
                depends_on.insert(
                    RELEASE.to_string(),
                    Setting::new(
                        Condition::Completed,
                        format!("{FILE} (`release` runs first)"),
                    ),
                );
            }
            ResolvedService {
                name: entry.name.clone(),
                path: Setting::new(".".to_string(), origin.clone()),
                builder: Setting::new(
                    Builder::Command {
                        build: None,
                        run: CommandLine::Shell(entry.command.clone()),
                    },
                    origin.clone(),
                ),
                kind: Setting::new(if web { Kind::Web } else { Kind::Worker }, kind_origin),
                instances: None,
                env: BTreeMap::new(),
                env_file: None,
                health: None,
                depends_on,
                watch: Setting::new(vec![".".to_string()], "default"),
                ignore: None,
                stop_signal: Setting::new("SIGTERM".to_string(), "default"),
                stop_timeout: Setting::new(DEFAULT_STOP_TIMEOUT, "default"),
                restart: if release {
                    Setting::new(Restart::Never, "default (a one-shot)")
                } else {
                    Setting::new(Restart::Always, "default")
                },
                build_at: None,
                run_at: Some(format!("{FILE}:{}:{}", entry.line, entry.column)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_comments_and_blank_lines() {
        let text = "# the app\nweb: bundle exec puma -p $PORT\n\n  worker:   sidekiq -C config/sidekiq.yml  \nrelease: rake db:migrate\n";
        let entries = parse(text).unwrap();
        let names: Vec<(&str, &str, usize)> = entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.command.as_str(), entry.line))
            .collect();
        assert_eq!(
            names,
            [
                ("web", "bundle exec puma -p $PORT", 2),
                ("worker", "sidekiq -C config/sidekiq.yml", 4),
                ("release", "rake db:migrate", 5)
            ]
        );
        let columns: Vec<usize> = entries.iter().map(|entry| entry.column).collect();
        assert_eq!(columns, [6, 13, 10]);
    }

    #[test]
    fn every_bad_line_with_its_line_and_column() {
        let errors = parse("web python3 app.py\nWeb: x\napi:\nweb: a\nweb: b\n").unwrap_err();
        let shown: Vec<String> = errors
            .iter()
            .map(|error| {
                format!(
                    "{}:{}:{}: {}",
                    error.file, error.position.line, error.position.column, error.message
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "Procfile:1:1: a line is `name: command` (for example `web: python3 app.py`)",
                "Procfile:2:1: `Web` is not a service name: use lowercase letters, digits, `-` and `_` (it becomes `Web.localhost`)",
                "Procfile:3:5: `api` has no command after the `:`",
                "Procfile:5:1: `web` is already line 4",
            ]
        );
    }

    #[test]
    fn a_command_that_reads_port_listens() {
        assert!(uses_port("puma -p $PORT"));
        assert!(uses_port("vite --port ${PORT}"));
        assert!(uses_port("python3 -m http.server ${PORT:-8000}"));
        assert!(!uses_port("sidekiq"));
        assert!(!uses_port("echo $PORTAL $SUPPORT"));
    }

    #[test]
    fn web_and_port_users_are_web_the_rest_workers_and_release_runs_first() {
        let entries = parse("web: gunicorn app:app\napi: ./api --port $PORT\nworker: celery worker\nrelease: ./migrate\n").unwrap();
        let services = services(&entries);
        let kinds: Vec<(&str, Kind)> = services
            .iter()
            .map(|service| (service.name.as_str(), service.kind.value))
            .collect();
        assert_eq!(
            kinds,
            [
                ("web", Kind::Web),
                ("api", Kind::Web),
                ("worker", Kind::Worker),
                ("release", Kind::Worker)
            ]
        );
        for service in &services {
            assert_eq!(service.path.value, ".");
            let waits = service.depends_on.get("release").map(|c| c.value);
            if service.name == "release" {
                assert_eq!(service.restart.value, Restart::Never);
                assert_eq!(waits, None);
            } else {
                assert_eq!(waits, Some(Condition::Completed), "{}", service.name);
            }
        }
    }
}
