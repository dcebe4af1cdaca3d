//! `stack.toml`'s text to [`FileConfig`]: the toml crate's tree with spans, walked by hand so
//! that every error of the file is found at once, each at its line and column. No I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::model::{Check, CommandLine, Condition, Health, Kind, Restart};
use super::{ConfigError, Position};

/// One setting as written, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    pub position: Position,
}

/// One `[services.NAME]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTable {
    pub name: String,
    pub position: Position,
    pub path: Option<Written<String>>,
    pub build: Option<Written<CommandLine>>,
    pub run: Option<Written<CommandLine>>,
    pub env: BTreeMap<String, Written<String>>,
    pub env_file: Option<Written<String>>,
    pub instances: Option<Written<usize>>,
    pub kind: Option<Written<Kind>>,
    pub health: Option<Written<Health>>,
    pub depends_on: BTreeMap<String, Written<Condition>>,
    pub watch: Option<Written<Vec<String>>>,
    pub ignore: Option<Written<Vec<String>>>,
    pub stop_signal: Option<Written<String>>,
    pub stop_timeout: Option<Written<Duration>>,
    pub restart: Option<Written<Restart>>,
    /// `run` was written, with an error of its own (already said).
    pub bad_run: bool,
}

/// Everything `stack.toml` says, in file order, and what was wrong in its tables (checked
/// with the whole project's errors, so that every error of the file is said at once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub services: Vec<ServiceTable>,
    pub errors: Vec<ConfigError>,
}

const FILE_KEYS: &[&str] = &["services"];
const SERVICE_KEYS: &[&str] = &[
    "path",
    "build",
    "run",
    "env",
    "env_file",
    "instances",
    "kind",
    "health",
    "depends_on",
    "watch",
    "ignore",
    "stop_signal",
    "stop_timeout",
    "restart",
];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "cmd",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
/// What other tools (compose, Procfiles, systemd) call a setting, and its name here.
const SYNONYMS: &[(&str, &str)] = &[
    ("environment", "env"),
    ("command", "run"),
    ("entrypoint", "run"),
    ("dependencies", "depends_on"),
    ("healthcheck", "health"),
    ("replicas", "instances"),
    ("scale", "instances"),
    ("directory", "path"),
    ("workdir", "path"),
    ("type", "kind"),
    ("env_files", "env_file"),
];
const SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2",
];

/// Parses the whole file; a TOML syntax error is the only one that stops it, the others are
/// in [`FileConfig::errors`] (a setting with an error is left out).
pub fn parse(text: &str) -> Result<FileConfig, Vec<ConfigError>> {
    let mut walker = Walker {
        text,
        errors: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(error) => {
            let offset = error.span().map_or(0, |span| span.start);
            walker.error(offset, format!("invalid TOML: {}", error.message().trim()));
            return Err(walker.errors);
        }
    };
    let mut config = FileConfig::default();
    for (key, value) in root.get_ref() {
        if key.get_ref() != "services" {
            walker.unknown_key(key, FILE_KEYS, "the file has only `[services.NAME]` tables");
            continue;
        }
        let Some(services) = walker.table(value, "`services`", "a table of services") else {
            continue;
        };
        for (name, table) in services {
            if let Some(service) = walker.service(name, table) {
                config.services.push(service);
            }
        }
    }
    config.errors = walker.errors;
    Ok(config)
}

struct Walker<'t> {
    text: &'t str,
    errors: Vec<ConfigError>,
}

type Value<'i> = Spanned<DeValue<'i>>;

impl Walker<'_> {
    fn position(&self, offset: usize) -> Position {
        Position::at(self.text, offset)
    }

    fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: super::FILE,
            position: self.position(offset),
            message: message.into(),
        });
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        known: &[&str],
        otherwise: &str,
    ) {
        let word = key.get_ref();
        let synonym = SYNONYMS
            .iter()
            .find(|(other, ours)| {
                known.contains(ours) && did_you_mean(&word.to_lowercase(), &[other]).is_some()
            })
            .map(|(_, ours)| *ours);
        let message = match synonym.or_else(|| did_you_mean(word, known)) {
            Some(hint) => format!("unknown key `{word}`, did you mean `{hint}`?"),
            None => format!("unknown key `{word}`: {otherwise}"),
        };
        self.error(key.span().start, message);
    }

    fn wrong_type(&mut self, value: &Value<'_>, what: &str, expected: &str) {
        let found = found(value.get_ref());
        self.error(
            value.span().start,
            format!("{what} must be {expected}, found {found}"),
        );
    }

    fn table<'a, 'i>(
        &mut self,
        value: &'a Value<'i>,
        what: &str,
        expected: &str,
    ) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(value, what, expected);
                None
            }
        }
    }

    fn string(&mut self, value: &Value<'_>, what: &str) -> Option<String> {
        match value.get_ref() {
            DeValue::String(text) => Some(text.to_string()),
            _ => {
                self.wrong_type(value, what, "a string");
                None
            }
        }
    }

    fn written<T>(&self, value: &Value<'_>, inner: T) -> Written<T> {
        Written {
            value: inner,
            position: self.position(value.span().start),
        }
    }

    /// [`strings`](Self::strings) that must be globs inside the project, relative to it;
    /// every bad one is an error at its own place.
    fn globs(&mut self, value: &Value<'_>, what: &str) -> Option<Vec<String>> {
        let globs = self.strings(value, what)?;
        let items: Vec<usize> = match value.get_ref() {
            DeValue::Array(items) => items.iter().map(|item| item.span().start).collect(),
            _ => vec![value.span().start],
        };
        let errors_before = self.errors.len();
        for (glob, offset) in globs.iter().zip(items) {
            let outside = std::path::Path::new(glob)
                .components()
                .any(|part| part == std::path::Component::ParentDir);
            if glob.starts_with('/') || outside {
                self.error(offset, format!("{what} `{glob}` must be inside the project and relative to it (like `services/api/**/*.py`)"));
            } else if let Err(error) = globset::Glob::new(glob) {
                self.error(
                    offset,
                    format!("{what} `{glob}` is not a glob: {}", error.kind()),
                );
            }
        }
        (self.errors.len() == errors_before).then_some(globs)
    }

    fn strings(&mut self, value: &Value<'_>, what: &str) -> Option<Vec<String>> {
        match value.get_ref() {
            DeValue::String(text) => Some(vec![text.to_string()]),
            DeValue::Array(items) => {
                let mut strings = Vec::new();
                for item in items {
                    match item.get_ref() {
                        DeValue::String(text) => strings.push(text.to_string()),
                        _ => {
                            self.wrong_type(item, &format!("each of {what}"), "a string");
                            return None;
                        }
                    }
                }
                Some(strings)
            }
            _ => {
                self.wrong_type(value, what, "a glob or an array of globs");
                None
            }
        }
    }

    fn command(&mut self, value: &Value<'_>, what: &str) -> Option<CommandLine> {
        match value.get_ref() {
            DeValue::String(text) if text.trim().is_empty() => {
                self.error(
                    value.span().start,
                    format!("{what} is empty: write the command to run"),
                );
                None
            }
            DeValue::String(text) => Some(CommandLine::Shell(text.to_string())),
            DeValue::Array(items) if items.is_empty() => {
                self.error(
                    value.span().start,
                    format!("{what} is an empty array: write the program and its arguments"),
                );
                None
            }
            DeValue::Array(items) => {
                let mut argv = Vec::new();
                for item in items {
                    match item.get_ref() {
                        DeValue::String(text) => argv.push(text.to_string()),
                        _ => {
                            self.wrong_type(item, &format!("each word of {what}"), "a string");
                            return None;
                        }
                    }
                }
                Some(CommandLine::Argv(argv))
            }
            _ => {
                self.wrong_type(
                    value,
                    what,
                    "a command (a string for `sh -c`, or an array of program and arguments)",
                );
                None
            }
        }
    }

    fn duration(&mut self, value: &Value<'_>, what: &str) -> Option<Duration> {
        let text = self.string(value, what)?;
        let parsed =
            crate::units::duration(&text).or_else(|| (text == "0s").then_some(Duration::ZERO));
        if parsed.is_none() {
            self.error(
                value.span().start,
                format!("{what} `{text}` is not a duration: write it like `500ms`, `2s` or `1m`"),
            );
        }
        parsed
    }

    /// A [`duration`](Self::duration) that must be more than 0: a check every 0s, a check
    /// that may take 0s or a stop with no time to stop have no meaning.
    fn nonzero_duration(&mut self, value: &Value<'_>, what: &str) -> Option<Duration> {
        let duration = self.duration(value, what)?;
        if duration.is_zero() {
            self.error(
                value.span().start,
                format!("{what} must be more than 0: write it like `500ms`, `2s` or `1m`"),
            );
            return None;
        }
        Some(duration)
    }

    fn positive(&mut self, value: &Value<'_>, what: &str) -> Option<u64> {
        match value.get_ref() {
            DeValue::Integer(integer) => match integer.as_str().replace('_', "").parse::<u64>() {
                Ok(number) if number > 0 => Some(number),
                _ => {
                    self.error(
                        value.span().start,
                        format!("{what} must be a positive whole number, found `{integer}`"),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(value, what, "a positive whole number");
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        value: &Value<'_>,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(value, what)?;
        if let Some((_, chosen)) = choices.iter().find(|(name, _)| *name == text) {
            return Some(*chosen);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
        let hint = did_you_mean(&text, &names)
            .map(|hint| format!(", did you mean `{hint}`?"))
            .unwrap_or_else(|| format!(": use {}", quoted.join(", ")));
        self.error(
            value.span().start,
            format!("{what} `{text}` is not known{hint}"),
        );
        None
    }

    fn service(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Value<'_>,
    ) -> Option<ServiceTable> {
        let service_name = name.get_ref().to_string();
        if !is_service_name(&service_name) {
            self.error(
                name.span().start,
                format!("`{service_name}` is not a service name: use lowercase letters, digits, `-` and `_` (it becomes `{service_name}.localhost`)"),
            );
        }
        let what = format!("`services.{service_name}`");
        let table = self.table(value, &what, "a table like `[services.NAME]`")?;
        let mut service = ServiceTable {
            name: service_name.clone(),
            position: self.position(name.span().start),
            ..ServiceTable::default()
        };
        for (key, value) in table {
            let key_name = key.get_ref().as_ref();
            let what = format!("`{key_name}`");
            match key_name {
                "path" => service.path = self.string(value, &what).map(|v| self.written(value, v)),
                "build" => {
                    service.build = self.command(value, &what).map(|v| self.written(value, v))
                }
                "run" => {
                    service.run = self.command(value, &what).map(|v| self.written(value, v));
                    service.bad_run = service.run.is_none();
                }
                "env_file" => {
                    service.env_file = self.string(value, &what).map(|v| self.written(value, v))
                }
                "env" => {
                    let Some(vars) = self.table(value, &what, "a table of `NAME = \"value\"`")
                    else {
                        continue;
                    };
                    for (var, text) in vars {
                        let valid = var
                            .get_ref()
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !var.get_ref().is_empty();
                        if !valid {
                            self.error(
                                var.span().start,
                                format!(
                                    "`{}` is not a variable name: use letters, digits and `_`",
                                    var.get_ref()
                                ),
                            );
                            continue;
                        }
                        // Values are never shown: the error names the variable only.
                        let text_value = match text.get_ref() {
                            DeValue::String(text) => Some(text.to_string()),
                            DeValue::Integer(integer) => Some(integer.to_string()),
                            DeValue::Boolean(flag) => Some(flag.to_string()),
                            _ => {
                                self.wrong_type(
                                    text,
                                    &format!("`env.{}`", var.get_ref()),
                                    "a string",
                                );
                                None
                            }
                        };
                        if let Some(text_value) = text_value {
                            let written = self.written(text, text_value);
                            service.env.insert(var.get_ref().to_string(), written);
                        }
                    }
                }
                "instances" => {
                    service.instances = self
                        .positive(value, &what)
                        .map(|n| self.written(value, usize::try_from(n).unwrap_or(usize::MAX)))
                }
                "kind" => {
                    service.kind = self
                        .choice(
                            value,
                            &what,
                            &[("web", Kind::Web), ("worker", Kind::Worker)],
                        )
                        .map(|v| self.written(value, v))
                }
                "restart" => {
                    service.restart = self
                        .choice(
                            value,
                            &what,
                            &[
                                ("on-failure", Restart::OnFailure),
                                ("always", Restart::Always),
                                ("never", Restart::Never),
                            ],
                        )
                        .map(|v| self.written(value, v))
                }
                "stop_signal" => {
                    let Some(text) = self.string(value, &what) else {
                        continue;
                    };
                    let full = if text.starts_with("SIG") {
                        text.clone()
                    } else {
                        format!("SIG{text}")
                    };
                    if SIGNALS.contains(&full.as_str()) {
                        service.stop_signal = Some(self.written(value, full));
                    } else {
                        self.error(
                            value.span().start,
                            format!(
                                "`stop_signal` `{text}` is not a signal stack sends: use one of {}",
                                SIGNALS.join(", ")
                            ),
                        );
                    }
                }
                "stop_timeout" => {
                    service.stop_timeout = self
                        .nonzero_duration(value, &what)
                        .map(|v| self.written(value, v))
                }
                "watch" => service.watch = self.globs(value, &what).map(|v| self.written(value, v)),
                "ignore" => {
                    service.ignore = self.globs(value, &what).map(|v| self.written(value, v))
                }
                "health" => service.health = self.health(value).map(|v| self.written(value, v)),
                "depends_on" => {
                    let Some(dependencies) =
                        self.table(value, &what, "a table like `{ writer = \"healthy\" }`")
                    else {
                        continue;
                    };
                    for (dependency, condition) in dependencies {
                        let what = format!("`depends_on.{}`", dependency.get_ref());
                        let chosen = self.choice(
                            condition,
                            &what,
                            &[
                                ("started", Condition::Started),
                                ("healthy", Condition::Healthy),
                                ("completed", Condition::Completed),
                            ],
                        );
                        if let Some(chosen) = chosen {
                            let written = Written {
                                value: chosen,
                                position: self.position(dependency.span().start),
                            };
                            service
                                .depends_on
                                .insert(dependency.get_ref().to_string(), written);
                        }
                    }
                }
                _ => self.unknown_key(
                    key,
                    SERVICE_KEYS,
                    &format!(
                        "a service takes {}",
                        SERVICE_KEYS
                            .iter()
                            .map(|key| format!("`{key}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        Some(service)
    }

    fn health(&mut self, value: &Value<'_>) -> Option<Health> {
        let table = self.table(value, "`health`", "a table like `{ http = \"/healthz\" }`")?;
        let mut checks = Vec::new();
        let mut health = Health::new(Check::Tcp);
        let errors_before = self.errors.len();
        for (key, item) in table {
            let key_name = key.get_ref().as_ref();
            let what = format!("`health.{key_name}`");
            match key_name {
                "http" => {
                    if let Some(path) = self.string(item, &what) {
                        if path.starts_with('/') {
                            checks.push(Check::Http(path));
                        } else {
                            self.error(item.span().start, format!("{what} must be a path starting with `/`, found `{path}`"));
                        }
                    }
                }
                "tcp" => match item.get_ref() {
                    DeValue::Boolean(true) => checks.push(Check::Tcp),
                    DeValue::Boolean(false) => {}
                    _ => self.wrong_type(item, &what, "`true`"),
                },
                "cmd" => {
                    if let Some(command) = self.string(item, &what) {
                        checks.push(Check::Cmd(command));
                    }
                }
                "interval" => {
                    if let Some(duration) = self.nonzero_duration(item, &what) {
                        health.interval = duration;
                    }
                }
                "timeout" => {
                    if let Some(duration) = self.nonzero_duration(item, &what) {
                        health.timeout = duration;
                    }
                }
                "start_period" => {
                    if let Some(duration) = self.duration(item, &what) {
                        health.start_period = duration;
                    }
                }
                "retries" => {
                    if let Some(retries) = self.positive(item, &what) {
                        health.retries = u32::try_from(retries).unwrap_or(u32::MAX);
                    }
                }
                _ => self.unknown_key(key, HEALTH_KEYS, "a check is `http`, `tcp` or `cmd`, timed by `interval`, `timeout`, `retries` and `start_period`"),
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        match checks.len() {
            1 => {
                health.check = checks.remove(0);
                Some(health)
            }
            0 => {
                self.error(value.span().start, "`health` has no check: set one of `http = \"/healthz\"`, `tcp = true` or `cmd = \"...\"`");
                None
            }
            _ => {
                self.error(
                    value.span().start,
                    "`health` has more than one check: keep one of `http`, `tcp` and `cmd`",
                );
                None
            }
        }
    }
}

/// What a person would call a TOML value's type.
fn found(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "a number",
        DeValue::Float(_) => "a fraction",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The known word closest to `word`, when it is close (a typo, not another word).
pub fn did_you_mean<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|candidate| (edit_distance(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Lowercase letters, digits, `-` and `_`: it becomes `<name>.localhost`.
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_and_other_words_do_not() {
        assert_eq!(did_you_mean("depend_on", SERVICE_KEYS), Some("depends_on"));
        assert_eq!(did_you_mean("comand", &["cmd", "command"]), Some("command"));
        assert_eq!(did_you_mean("banana", SERVICE_KEYS), None);
    }

    #[test]
    fn a_full_service_parses() {
        let config = parse(
            r#"
[services.stats]
path = "services/stats"
build = "python3 -m venv .venv"
run = [".venv/bin/python", "app.py"]
env = { MODE = "dev", WORKERS = 2 }
instances = 2
health = { http = "/healthz", interval = "500ms", retries = 2 }
depends_on = { writer = "healthy" }
stop_signal = "INT"
stop_timeout = "3s"
restart = "on-failure"
"#,
        )
        .unwrap();
        assert_eq!(config.errors, []);
        let stats = &config.services[0];
        assert_eq!(stats.name, "stats");
        assert_eq!(stats.position.line, 2);
        assert_eq!(
            stats.run.as_ref().unwrap().value,
            CommandLine::Argv(vec![".venv/bin/python".into(), "app.py".into()])
        );
        assert_eq!(stats.env["WORKERS"].value, "2");
        let health = &stats.health.as_ref().unwrap().value;
        assert_eq!(health.check, Check::Http("/healthz".into()));
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(health.retries, 2);
        assert_eq!(stats.stop_signal.as_ref().unwrap().value, "SIGINT");
        assert_eq!(stats.depends_on["writer"].value, Condition::Healthy);
    }
}
