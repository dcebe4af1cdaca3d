//! The typed settings of `stack.toml`, and their JSON form (`stack config --json`): plain data,
//! no I/O. Durations are written and shown as people write them (`500ms`, `2s`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A command: a string runs through `sh -c`, an array is exec'd as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandLine {
    /// The program and its arguments.
    pub fn argv(&self) -> (String, Vec<String>) {
        match self {
            CommandLine::Shell(line) => ("sh".into(), vec!["-c".into(), line.clone()]),
            CommandLine::Argv(argv) => (
                argv.first().cloned().unwrap_or_default(),
                argv.iter().skip(1).cloned().collect(),
            ),
        }
    }

    /// The programs a person would have to install: the first word of each simple command
    /// (`test -x .venv/bin/python || python3 -m venv .venv` names `python3`), past
    /// assignments, `exec` and the keywords before a command (`do`, `then`); shell builtins,
    /// keywords and paths (`.venv/bin/python`, the build's own) are not counted, and quoted
    /// text is one word (`sh -c 'while true; do ...; done'` names `sh`).
    pub fn programs(&self) -> Vec<String> {
        let words: Vec<String> = match self {
            CommandLine::Shell(line) => shell_commands(line)
                .into_iter()
                .filter_map(|words| {
                    let first = words.into_iter().find(|word| {
                        !word.contains('=') && !BEFORE_A_COMMAND.contains(&word.as_str())
                    })?;
                    (!NOT_A_COMMAND.contains(&first.as_str())).then_some(first)
                })
                .collect(),
            CommandLine::Argv(argv) => argv.first().cloned().into_iter().collect(),
        };
        let mut programs: Vec<String> = Vec::new();
        for word in words {
            let counted = !word.contains('/')
                && !word.starts_with('$')
                && !SHELL_WORDS.contains(&word.as_str());
            if counted && !programs.contains(&word) {
                programs.push(word);
            }
        }
        programs
    }
}

/// The words of each simple command of a shell line: split at unquoted `;`, `&`, `|`, `(`,
/// `)`, backquotes and newlines, and at unquoted blanks; quotes removed, backslash escapes
/// kept as the character they escape.
fn shell_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands: Vec<Vec<String>> = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    let end_word = |word: &mut Option<String>, commands: &mut Vec<Vec<String>>| {
        if let Some(word) = word.take() {
            commands.last_mut().expect("never empty").push(word);
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(escaped) = chars.next() {
                    word.get_or_insert_with(String::new).push(escaped);
                }
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, ';' | '&' | '|' | '(' | ')' | '`' | '\n') => {
                end_word(&mut word, &mut commands);
                commands.push(Vec::new());
            }
            (None, c) if c.is_whitespace() => end_word(&mut word, &mut commands),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands);
    commands.retain(|words| !words.is_empty());
    commands
}

/// Words that come before a command: `do sleep 1`, `then exec node`.
const BEFORE_A_COMMAND: &[&str] = &[
    "exec", "do", "then", "else", "elif", "if", "while", "until", "!", "{", "time",
];
/// A simple command that starts with one of these runs no program of its own.
const NOT_A_COMMAND: &[&str] = &["for", "case", "in", "done", "fi", "esac", "}"];

/// Builtins of `sh`: not programs on PATH (its keywords are in the two lists above).
const SHELL_WORDS: &[&str] = &[
    ".", ":", "cd", "export", "set", "source", "test", "[", "true", "false", "echo", "printf",
    "read", "trap", "ulimit", "umask", "wait", "eval", "command",
];

impl std::fmt::Display for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandLine::Shell(line) => f.write_str(line),
            CommandLine::Argv(argv) => f.write_str(&argv.join(" ")),
        }
    }
}

/// `web` takes `PORT` and traffic; a `worker` has neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Web,
    Worker,
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// `GET path` answers 2xx or 3xx.
    Http(String),
    /// The instance's port accepts a connection.
    Tcp,
    /// The command exits 0 (run through `sh -c` in the deployment's directory).
    Cmd(String),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Http(path) => write!(f, "GET {path}"),
            Check::Tcp => f.write_str("a TCP connect"),
            Check::Cmd(command) => write!(f, "`{command}`"),
        }
    }
}

/// A health check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub check: Check,
    /// How often a ready instance is checked.
    #[serde(with = "duration_text")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Failures in a row, once ready, that take an instance out and restart it.
    pub retries: u32,
    /// Time a new instance gets before it must be ready (beside the start's readiness timeout).
    #[serde(with = "duration_text")]
    pub start_period: Duration,
}

impl Health {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_RETRIES: u32 = 3;

    pub fn new(check: Check) -> Self {
        Health {
            check,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            start_period: Duration::ZERO,
        }
    }
}

/// What a dependent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Its process runs.
    Started,
    /// Its health check (or port) passes.
    Healthy,
    /// A one-shot that must exit 0.
    Completed,
}

/// What happens when an instance's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart after a non-zero exit (or a signal); an exit 0 ends the instance.
    OnFailure,
    /// Restart whatever the exit (with backoff).
    #[default]
    Always,
    Never,
}

/// Durations as text in JSON: `500ms`, `2s`, `1m30s`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(duration: Duration) -> String {
        let ms = duration.as_millis();
        if ms == 0 {
            "0s".into()
        } else if ms % 1000 != 0 {
            format!("{ms}ms")
        } else {
            let seconds = ms / 1000;
            match (seconds / 60, seconds % 60) {
                (0, s) => format!("{s}s"),
                (m, 0) => format!("{m}m"),
                (m, s) => format!("{m}m{s}s"),
            }
        }
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::units::duration(&text)
            .or_else(|| (text == "0s").then_some(Duration::ZERO))
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a duration")))
    }
}

/// A value and where it came from: `detected`, `default`, or `stack.toml:LINE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting<T> {
    pub value: T,
    pub from: String,
}

impl<T> Setting<T> {
    pub fn new(value: T, from: impl Into<String>) -> Self {
        Setting {
            value,
            from: from.into(),
        }
    }
}

/// How a resolved service is built and started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Builder {
    /// A Cargo package with a binary (built with the workspace's one cargo run).
    Cargo { package: String },
    /// `npm start`, after `npm install` when `node_modules` is missing.
    Npm,
    /// The `build` and `run` of `stack.toml`.
    Command {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build: Option<CommandLine>,
        run: CommandLine,
    },
}

/// One service as `stack up` runs it: detected, declared, or detected and given settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedService {
    pub name: String,
    /// Relative to the project.
    pub path: Setting<String>,
    pub builder: Setting<Builder>,
    pub kind: Setting<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Setting<usize>>,
    /// Shown as `***`: values may be secrets.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "masked"
    )]
    pub env: BTreeMap<String, Setting<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<Setting<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Setting<Health>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Setting<Condition>>,
    pub watch: Setting<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Setting<Vec<String>>>,
    pub stop_signal: Setting<String>,
    #[serde(with = "setting_duration")]
    pub stop_timeout: Setting<Duration>,
    pub restart: Setting<Restart>,
}

fn masked<S: serde::Serializer>(
    env: &BTreeMap<String, Setting<String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let masked: BTreeMap<&String, Setting<&str>> = env
        .iter()
        .map(|(key, value)| (key, Setting::new("***", value.from.clone())))
        .collect();
    masked.serialize(serializer)
}

/// Every service of a project, in start order (dependencies first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolvedConfig {
    /// `stack.toml` when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub services: Vec<ResolvedService>,
}

mod setting_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{duration_text, Setting};

    #[derive(Serialize, Deserialize)]
    struct Text {
        value: String,
        from: String,
    }

    pub fn serialize<S: Serializer>(
        setting: &Setting<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        Text {
            value: duration_text::format(setting.value),
            from: setting.from.clone(),
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Setting<Duration>, D::Error> {
        let text = Text::deserialize(deserializer)?;
        let value = crate::units::duration(&text.value)
            .or_else(|| (text.value == "0s").then_some(Duration::ZERO))
            .ok_or_else(|| serde::de::Error::custom("not a duration"))?;
        Ok(Setting::new(value, text.from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_the_first_words_of_each_command_but_builtins_and_paths() {
        let build = CommandLine::Shell(
            "test -x .venv/bin/python || python3 -m venv .venv; cmp -s a b || (.venv/bin/pip install -r r && cp a b)".into(),
        );
        assert_eq!(build.programs(), ["python3", "cmp", "cp"]);
        let run = CommandLine::Shell("PORT=1 exec node server.js".into());
        assert_eq!(run.programs(), ["node"]);
        assert_eq!(
            CommandLine::Argv(vec![".venv/bin/python".into(), "app.py".into()]).programs(),
            Vec::<String>::new()
        );
        assert_eq!(
            CommandLine::Argv(vec!["go".into(), "run".into()]).programs(),
            ["go"]
        );
    }

    #[test]
    fn quoted_text_and_shell_keywords_name_no_programs() {
        let clock = CommandLine::Shell("sh -c 'while true; do echo tick; sleep 1; done'".into());
        assert_eq!(clock.programs(), ["sh"]);
        let inline = CommandLine::Shell(
            "while true; do celery -A app worker; sleep 1; done; if [ -f x ]; then exec gunicorn \"app:make()\"; fi".into(),
        );
        assert_eq!(inline.programs(), ["celery", "sleep", "gunicorn"]);
        let loops = CommandLine::Shell(
            "for f in a b; do cat \"$f\"; done; case $X in a) go run . ;; esac".into(),
        );
        assert_eq!(loops.programs(), ["cat", "go"]);
        let escaped = CommandLine::Shell("echo a\\;b && node 'server.js'".into());
        assert_eq!(escaped.programs(), ["node"]);
    }
}
