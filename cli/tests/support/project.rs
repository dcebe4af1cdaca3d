//! A project directory in a temp dir, and the short `stack` commands run in it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{copy_tree, workspace, COMMAND_DEADLINE, STACK};

/// A project directory in a temp dir, and the environment its `stack` commands get.
pub struct Project {
    pub dir: tempfile::TempDir,
    /// CARGO_TARGET_DIR for `stack up`; `None`: the caller's.
    pub target_dir: Option<PathBuf>,
    /// Variables set for every `stack` command of this project, over a cleaned environment.
    pub env: BTreeMap<String, String>,
    /// `STACK_HOME` of its commands (the local CA), never the real one.
    pub stack_home: tempfile::TempDir,
}

/// What a short `stack` command did. The project's directory reads `[DIR]` in its output, so
/// that snapshots do not depend on the temp dir.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout, then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts that the command exited 1 with each of `texts` on stderr.
    pub fn assert_refused(&self, texts: &[&str]) {
        assert_eq!(self.code, 1, "{}", self.all());
        for text in texts {
            assert!(
                self.stderr.contains(text),
                "no `{text}` in:\n{}",
                self.all()
            );
        }
    }
}

impl Project {
    /// An empty directory.
    pub fn empty() -> Project {
        Project {
            dir: tempfile::tempdir().expect("a temp dir"),
            target_dir: None,
            env: BTreeMap::new(),
            stack_home: tempfile::tempdir().expect("a temp dir"),
        }
    }

    /// The demo: `aliases.json` and a `.env` with the given `SESSION_SECRET`.
    pub fn demo(secret: &str) -> Project {
        let project = Project::empty();
        fs::copy(
            workspace().join("aliases.json"),
            project.path().join("aliases.json"),
        )
        .expect("the workspace has aliases.json");
        project.write(".env", &format!("SESSION_SECRET={secret}\n"));
        project
    }

    /// A copy of `tests/fixtures/<name>`.
    pub fn fixture(name: &str) -> Project {
        let project = Project::empty();
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
            project.path(),
        );
        project
    }

    /// Sets `name` for every `stack` command of this project.
    pub fn with_env(mut self, name: &str, value: &str) -> Project {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Builds with CARGO_TARGET_DIR `dir`.
    pub fn with_target_dir(mut self, dir: PathBuf) -> Project {
        self.target_dir = Some(dir);
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to the file `name` of the project.
    pub fn write(&self, name: &str, text: &str) -> &Project {
        let path = self.path().join(name);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).expect("create a test file's directory");
        }
        fs::write(path, text).expect("write a test file");
        self
    }

    /// `stack --cwd <dir> <args>`, run in the project's directory: NO_COLOR, none of the
    /// caller's CLICOLOR_FORCE, SESSION_SECRET or REDIS_SESSION_URL (each test says what
    /// `stack` gets: [`Project::with_env`]), no stdin.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(STACK);
        command.arg("--cwd").arg(self.path()).args(args);
        self.clean_environment(&mut command);
        command
    }

    /// The environment of [`Project::command`], for a command that runs `stack` some other way.
    pub fn clean_environment(&self, command: &mut Command) {
        command
            .current_dir(self.path())
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("SESSION_SECRET")
            .env_remove("REDIS_SESSION_URL")
            // The local CA in a temp dir, HTTPS on a free port: never the real home, never a
            // port another test holds. No trust store is ever touched.
            .env("STACK_HOME", self.stack_home.path())
            .env("STACK_HTTPS_PORT", "0")
            .env("STACK_TRUST_SYSTEM_DIR", "")
            .env("STACK_TRUST_NSS_DBS", "")
            .env("STACK_TRUST_UPDATE_COMMAND", "")
            .envs(
                self.target_dir
                    .iter()
                    .map(|dir| ("CARGO_TARGET_DIR", dir.as_os_str())),
            )
            .envs(&self.env)
            .stdin(Stdio::null());
    }

    /// Runs a short `stack` command in this project, bounded in time.
    pub fn stack(&self, args: &[&str]) -> Run {
        self.run(&mut self.command(args))
    }

    /// [`Project::stack`] as a person types it in the directory: no `--cwd`, so the project is
    /// `.` (`stack init` names what it writes relative to it).
    pub fn stack_without_cwd(&self, args: &[&str]) -> Run {
        let mut command = Command::new(STACK);
        command.args(args);
        self.clean_environment(&mut command);
        self.run(&mut command)
    }

    /// Runs a command that must succeed, and returns its stdout.
    pub fn stack_ok(&self, args: &[&str]) -> String {
        let run = self.stack(args);
        assert_eq!(
            run.code,
            0,
            "`stack {}` failed:\n{}\n{}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
        run.stdout
    }

    /// Runs `command` (a `stack` command of this project) to its end, within
    /// [`COMMAND_DEADLINE`]; its output is read as it comes, so a long one cannot block it.
    pub fn run(&self, command: &mut Command) -> Run {
        let shown = command
            .get_args()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the stack binary runs");
        let readers = [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ]
        .map(|mut stream| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                stream.read_to_end(&mut bytes).map(|_| bytes)
            })
        });
        let deadline = Instant::now() + COMMAND_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for stack") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`stack {shown}` did not finish in {COMMAND_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let dir = self.path().display().to_string();
        let [stdout, stderr] = readers.map(|reader| {
            let bytes = reader
                .join()
                .expect("a reader thread does not panic")
                .expect("read the output of stack");
            String::from_utf8(bytes)
                .expect("stack writes UTF-8")
                .replace(&dir, "[DIR]")
        });
        Run {
            code: status.code().expect("stack exits, not killed by a signal"),
            stdout,
            stderr,
        }
    }

    /// Every log file `stack up` wrote, concatenated.
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = fs::read_dir(self.path().join(".stack/logs")) {
            for entry in entries.flatten() {
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// `.stack/state.json`, if written.
    pub fn state(&self) -> Option<String> {
        fs::read_to_string(self.path().join(".stack/state.json")).ok()
    }

    pub fn ls(&self) -> Vec<Value> {
        serde_json::from_str(&self.stack_ok(&["ls", "--json"])).expect("`stack ls --json` is JSON")
    }

    /// The live deployment of a service in `stack ls --json`.
    pub fn live(&self, service: &str) -> Value {
        self.ls()
            .into_iter()
            .find(|deployment| deployment["service"] == service && deployment["current"] == true)
            .unwrap_or_else(|| panic!("no live deployment of {service}"))
    }
}
