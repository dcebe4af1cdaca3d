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
    /// assignments, redirections (`2>&1`, `>log`), `exec` and the keywords before a command
    /// (`do`, `then`); shell builtins, keywords, functions the line defines and paths
    /// (`.venv/bin/python`, the build's own) are not counted, and quoted text is one word
    /// (`sh -c 'while true; do ...; done'` names `sh`). When a word may not be a program (a
    /// `$(( ))` sum, text after a here-document), it is not counted: a check that refuses a
    /// command that runs is worse than one that lets a missing program say so itself.
    pub fn programs(&self) -> Vec<String> {
        let words: Vec<String> = match self {
            CommandLine::Shell(line) => {
                let split = shell_commands(line);
                split
                    .commands
                    .into_iter()
                    .filter_map(|words| {
                        let first = words.into_iter().find(|word| {
                            !is_assignment(word) && !BEFORE_A_COMMAND.contains(&word.as_str())
                        })?;
                        (!NOT_A_COMMAND.contains(&first.as_str())
                            && !split.functions.contains(&first))
                        .then_some(first)
                    })
                    .collect()
            }
            CommandLine::Argv(argv) => argv.first().cloned().into_iter().collect(),
        };
        let mut programs: Vec<String> = Vec::new();
        for word in words {
            let counted = looks_like_a_program(&word) && !SHELL_WORDS.contains(&word.as_str());
            if counted && !programs.contains(&word) {
                programs.push(word);
            }
        }
        programs
    }
}

/// `NAME=value` before a command.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A word that names a program on PATH: no path, no expansion, no glob; letters among its
/// characters (not a number, not `-x`).
fn looks_like_a_program(word: &str) -> bool {
    !word.is_empty()
        && !word.starts_with('-')
        && word.chars().any(|c| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | ':'))
}

/// What [`shell_commands`] found in a line.
#[derive(Debug, Default)]
struct ShellSplit {
    /// The words of each simple command, redirections and their targets left out.
    commands: Vec<Vec<String>>,
    /// The names of the functions it defines (`name() { ...; }`, `function name`).
    functions: Vec<String>,
}

/// The words of each simple command of a shell line: split at unquoted `;`, `&`, `|`, `(`,
/// `)`, backquotes and newlines, and at unquoted blanks; quotes removed, backslash escapes
/// kept as the character they escape, a backslash-newline joining two lines, `#` comments,
/// redirections (`2>&1`, `&>log`, `> out`, `<in`) and `$(( ))` left out. A here-document
/// (`<<EOF`) ends the reading: its body is text, not commands.
fn shell_commands(line: &str) -> ShellSplit {
    let mut split = ShellSplit {
        commands: vec![Vec::new()],
        functions: Vec::new(),
    };
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    // The word after a redirection operator is its file, not a command's word.
    let mut redirect_target = false;
    // After `function`: the name it defines.
    let mut function_name = false;
    let chars: Vec<char> = line.chars().collect();
    let mut index = 0;
    let end_word = |word: &mut Option<String>,
                    split: &mut ShellSplit,
                    redirect_target: &mut bool,
                    function_name: &mut bool| {
        if let Some(word) = word.take() {
            if std::mem::take(redirect_target) {
                return;
            }
            if std::mem::take(function_name) {
                split.functions.push(word);
                return;
            }
            let words = split.commands.last_mut().expect("never empty");
            if words.is_empty() && word == "function" {
                *function_name = true;
                return;
            }
            words.push(word);
        }
    };
    while index < chars.len() {
        let c = chars[index];
        let next = chars.get(index + 1).copied();
        index += 1;
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some('"') | None, '\\') => {
                index += 1;
                match next {
                    // A line continuation: the two lines are one.
                    Some('\n') | None => {}
                    Some(escaped) => word.get_or_insert_with(String::new).push(escaped),
                }
            }
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => {
                while index < chars.len() && chars[index] != '\n' {
                    index += 1;
                }
            }
            (None, '$') if next == Some('(') && chars.get(index + 1) == Some(&'(') => {
                // Arithmetic: `$(( n + 1 ))` runs nothing; skip to its closing `))`.
                let mut depth = 0usize;
                while index < chars.len() {
                    match chars[index] {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                index += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    index += 1;
                }
                word.get_or_insert_with(String::new).push('$');
            }
            (None, '<' | '>') | (None, '&') if c != '&' || next == Some('>') => {
                // A redirection: `2>&1`, `>>log`, `<in`, `&>log`, `>|out`, `<<EOF`. A file
                // descriptor number just before it is part of it.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                {
                    word = None;
                }
                end_word(
                    &mut word,
                    &mut split,
                    &mut redirect_target,
                    &mut function_name,
                );
                let mut operator = String::from(c);
                while let Some(&more) = chars.get(index) {
                    if matches!(more, '<' | '>' | '&' | '|') && operator.len() < 3 {
                        operator.push(more);
                        index += 1;
                    } else {
                        break;
                    }
                }
                if operator.starts_with("<<") && operator != "<<<" {
                    // A here-document: what follows is its body.
                    break;
                }
                if operator.ends_with('&') {
                    // `>&2`, `2>&1`, `<&-`: a descriptor, or a file when a word follows.
                    while chars
                        .get(index)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '-')
                    {
                        index += 1;
                    }
                    redirect_target = !chars
                        .get(index)
                        .is_none_or(|d| d.is_whitespace() || ";&|()".contains(*d));
                } else {
                    redirect_target = true;
                }
            }
            (None, '(') if next == Some(')') => {
                // `name() { ...; }` defines a function.
                let words = split.commands.last_mut().expect("never empty");
                if let (Some(name), true) = (word.take(), words.is_empty()) {
                    split.functions.push(name);
                } else if let Some(name) = words.pop() {
                    split.functions.push(name);
                }
                index += 1;
            }
            (None, ';' | '&' | '|' | '(' | ')' | '`' | '\n') => {
                end_word(
                    &mut word,
                    &mut split,
                    &mut redirect_target,
                    &mut function_name,
                );
                redirect_target = false;
                split.commands.push(Vec::new());
            }
            (None, c) if c.is_whitespace() => end_word(
                &mut word,
                &mut split,
                &mut redirect_target,
                &mut function_name,
            ),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(
        &mut word,
        &mut split,
        &mut redirect_target,
        &mut function_name,
    );
    split.commands.retain(|words| !words.is_empty());
    split
}

/// Words that come before a command: `do sleep 1`, `then exec node`.
const BEFORE_A_COMMAND: &[&str] = &[
    "exec", "do", "then", "else", "elif", "if", "while", "until", "!", "{", "time", "nohup",
    "builtin", "command", "env", "nice",
];
/// A simple command that starts with one of these runs no program of its own.
const NOT_A_COMMAND: &[&str] = &[
    "for", "case", "in", "done", "fi", "esac", "}", "select", "[[", "]]", "((", "))",
];

/// Builtins of `sh` (and of bash, which `sh` often is): not programs on PATH (its keywords
/// are in the two lists above).
const SHELL_WORDS: &[&str] = &[
    ".", ":", "alias", "bg", "break", "cd", "continue", "declare", "echo", "eval", "exit",
    "export", "false", "fg", "getopts", "hash", "jobs", "kill", "let", "local", "printf", "pwd",
    "read", "readonly", "return", "set", "shift", "shopt", "source", "test", "[", "times", "trap",
    "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
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
    /// Where `build` and `run` are written, with the column (`stack.toml:4:7`), for errors;
    /// `stack config` shows the line in their origin.
    #[serde(skip)]
    pub build_at: Option<String>,
    #[serde(skip)]
    pub run_at: Option<String>,
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

    fn programs(line: &str) -> Vec<String> {
        CommandLine::Shell(line.into()).programs()
    }

    #[test]
    fn redirections_and_their_files_name_no_programs() {
        let cases: &[(&str, &[&str])] = &[
            ("python3 -m http.server $PORT 2>&1", &["python3"]),
            ("node server.js >>log 2>&1 | tee out", &["node", "tee"]),
            ("2>err.log gunicorn app:app", &["gunicorn"]),
            ("> /dev/null node a.js", &["node"]),
            ("cmd &>log; cmd2 >&2; cmd3 <&0", &["cmd", "cmd2", "cmd3"]),
            ("go run . >| out.txt", &["go"]),
            ("cat <<EOF\nnot-a-program here\nEOF", &["cat"]),
            ("node a.js>out", &["node"]),
        ];
        for (line, expected) in cases {
            assert_eq!(programs(line), *expected, "{line}");
        }
    }

    #[test]
    fn builtins_continuations_comments_and_functions_name_no_programs() {
        let cases: &[(&str, &[&str])] = &[
            ("python3 app.py || exit 1", &["python3"]),
            ("f() { return 0; }; f; unset X; shift; local y=1", &[]),
            ("function serve { exec node a.js; }; serve", &["node"]),
            ("while true; do break; continue; done; readonly Z=1", &[]),
            ("python3 \\\n  -m http.server", &["python3"]),
            ("node a.js # then python3", &["node"]),
            ("echo $(( 1 + 2 )); [[ -f x ]] && ruby x", &["ruby"]),
            ("env -i HOME=/ node a.js; nohup sidekiq", &["sidekiq"]),
        ];
        for (line, expected) in cases {
            assert_eq!(programs(line), *expected, "{line}");
        }
    }
}
