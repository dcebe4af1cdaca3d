//! `stack init [DIR] [--template rust|node] [--force]`: write a new project from an embedded
//! template and say the two commands to run next.

use std::path::{Component, Path};
use std::process::ExitCode;

use crate::args::InitArgs;
use crate::init::{self, InitError, Template};
use crate::output::{self, CliError, CliResult};

/// The demo's alias host, as the template's `aliases.json` is meant to be used.
const DEMO_HOST: &str = "counter-demo.localhost";

pub fn run(project_dir: &Path, args: InitArgs) -> CliResult<ExitCode> {
    let template = Template::from_name(&args.template)
        .expect("clap only accepts the template names Template knows");
    let dir = if project_dir == Path::new(".") {
        args.dir.clone()
    } else {
        project_dir.join(&args.dir)
    };
    let written = init::write_project(&dir, template, args.force).map_err(|error| {
        let hint = match &error {
            InitError::Conflicts { .. } => {
                "Nothing was written. Pick an empty directory (`stack init <dir>`), or run again with `--force` to overwrite them."
            }
            InitError::InTheWay { .. } => "Nothing was written. Move it aside and run `stack init` again.",
            InitError::EmptyTemplate(_) => "Build stack from a checkout that has the template, or pick the other one with `--template`.",
            InitError::NotADirectory(_) | InitError::Write { .. } => {
                "Check the path and its permissions."
            }
        };
        CliError::new(error.to_string()).hint(hint)
    })?;

    let shown = display_dir(&args.dir);
    let overwritten = match written.overwritten.len() {
        0 => String::new(),
        1 => ", 1 overwritten".into(),
        n => format!(", {n} overwritten"),
    };
    output::success(format!(
        "Initialised a {template} project in `{shown}` ({} files{overwritten})",
        written.files.len()
    ));
    output::info("Next, run:");
    if !is_current_dir(&args.dir) {
        println!("    cd {}", shell_word(&shown));
    }
    println!("    stack alias {DEMO_HOST} --rules aliases.json");
    println!("    stack up");
    Ok(ExitCode::SUCCESS)
}

fn is_current_dir(dir: &Path) -> bool {
    dir.components().all(|part| part == Component::CurDir)
}

fn display_dir(dir: &Path) -> String {
    if is_current_dir(dir) {
        ".".into()
    } else {
        dir.display().to_string()
    }
}

/// The directory as one word a shell reads back unchanged (quoted only when needed).
fn shell_word(text: &str) -> String {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-~+,:@".contains(&b));
    if plain && !text.is_empty() {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_as_shell_words() {
        assert!(is_current_dir(Path::new(".")));
        assert!(is_current_dir(Path::new("./.")));
        assert!(!is_current_dir(Path::new("demo")));
        assert_eq!(shell_word("demo/app"), "demo/app");
        assert_eq!(shell_word("my demo"), "'my demo'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
