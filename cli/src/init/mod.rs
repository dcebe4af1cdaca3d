//! `stack init`'s templates and the writing of a new project from one of them.
//!
//! The templates are embedded in the binary from `cli/templates.bundle`, which
//! `cli/examples/bundle_templates.rs` writes from this repository's own `services/` (the
//! `rust` template) and `templates/node/` (the `node` template), and a test keeps current: no
//! second copy of the services to edit by hand, and no build script that would recompile
//! `stack` at every save under `services/`. This module owns
//! choosing a template, refusing to overwrite (every conflict listed, nothing written), and
//! writing the files. It also owns [`dotenv_warning`], the check `stack up` runs on `.env`.
//! It never runs a build and never talks to a running `stack up`.

mod dotenv;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use dotenv::dotenv_warning;

/// One file of a template: its path in the new project and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct TemplateFile {
    pub path: &'static str,
    pub contents: &'static [u8],
}

/// Both templates, as `cli/examples/bundle_templates.rs` writes them: per file a line
/// `=== <template> <path> <bytes>`, its bytes, a newline.
static BUNDLE: &str = include_str!("../../templates.bundle");

/// The files of `template` in the bundle, sorted by path (as the bundle is).
fn bundled(template: &str) -> Vec<TemplateFile> {
    let mut files = Vec::new();
    let mut rest = BUNDLE;
    while let Some(after) = rest.strip_prefix("=== ") {
        let (header, body) = after
            .split_once('\n')
            .expect("a bundle header ends its line");
        let mut fields = header.split(' ');
        let (Some(name), Some(path), Some(length)) = (fields.next(), fields.next(), fields.next())
        else {
            panic!("a bundle header is `=== <template> <path> <bytes>`: {header}");
        };
        let length: usize = length.parse().expect("a bundle header ends with a length");
        let (contents, after) = body.split_at(length);
        if name == template {
            files.push(TemplateFile {
                path,
                contents: contents.as_bytes(),
            });
        }
        rest = after
            .strip_prefix('\n')
            .expect("a newline follows each bundled file");
    }
    files
}

/// A project template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// A Cargo workspace: the writer, the reader and the session library.
    Rust,
    /// The Node version of the same two services (express-session + connect-redis).
    Node,
}

impl Template {
    pub fn from_name(name: &str) -> Option<Template> {
        match name {
            "rust" => Some(Template::Rust),
            "node" => Some(Template::Node),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Template::Rust => "rust",
            Template::Node => "node",
        }
    }

    /// The template's files, sorted by path.
    pub fn files(self) -> &'static [TemplateFile] {
        static RUST: OnceLock<Vec<TemplateFile>> = OnceLock::new();
        static NODE: OnceLock<Vec<TemplateFile>> = OnceLock::new();
        let files = match self {
            Template::Rust => &RUST,
            Template::Node => &NODE,
        };
        files.get_or_init(|| bundled(self.name()))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("the `{0}` template was not embedded in this build of stack")]
    EmptyTemplate(Template),
    #[error("`{}` exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Paths relative to the target directory, sorted.
    #[error("{} already exist{} in `{}`:\n{}", plural_files(.paths.len()), if .paths.len() == 1 { "s" } else { "" }, .dir.display(), list(.paths))]
    Conflicts { dir: PathBuf, paths: Vec<String> },
    /// A path the template needs as a file is a directory (or the other way round); `--force`
    /// replaces files, never directories.
    #[error("`{}` is in the way: the template needs it to be a {needed}", .path.display())]
    InTheWay { path: PathBuf, needed: &'static str },
    #[error("cannot write `{}`: {source}", .path.display())]
    Write { path: PathBuf, source: io::Error },
}

fn plural_files(count: usize) -> String {
    if count == 1 {
        "1 file".into()
    } else {
        format!("{count} files")
    }
}

/// One path a line, indented.
fn list(paths: &[String]) -> String {
    paths
        .iter()
        .map(|path| format!("  {path}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What [`write_project`] did.
#[derive(Debug)]
pub struct Written {
    /// Paths relative to the project directory, in the order written.
    pub files: Vec<&'static str>,
    /// Of those, the ones that existed before and were overwritten (only with `force`).
    pub overwritten: Vec<&'static str>,
}

/// Writes `template` into `dir` (created if missing). Without `force`, any file of the
/// template that already exists makes it refuse, listing them all, before anything is written;
/// with `force` existing files are replaced. A directory in the way is always an error.
pub fn write_project(dir: &Path, template: Template, force: bool) -> Result<Written, InitError> {
    let files = template.files();
    if files.is_empty() {
        return Err(InitError::EmptyTemplate(template));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(InitError::NotADirectory(dir.to_path_buf()));
    }

    // Check everything first: a refusal writes nothing.
    let mut conflicts = Vec::new();
    for file in files {
        let target = dir.join(file.path);
        // Every ancestor inside the project must be a directory (or not exist yet).
        let mut ancestor = target.parent();
        while let Some(path) = ancestor {
            if path == dir {
                break;
            }
            if path.exists() && !path.is_dir() {
                return Err(InitError::InTheWay {
                    path: path.to_path_buf(),
                    needed: "directory",
                });
            }
            ancestor = path.parent();
        }
        match fs::symlink_metadata(&target) {
            Ok(metadata) if metadata.is_dir() => {
                return Err(InitError::InTheWay {
                    path: target,
                    needed: "file",
                })
            }
            Ok(_) => conflicts.push(file.path),
            Err(_) => {}
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(InitError::Conflicts {
            dir: dir.to_path_buf(),
            paths: conflicts.iter().map(|path| path.to_string()).collect(),
        });
    }

    let mut written = Vec::with_capacity(files.len());
    for file in files {
        let target = dir.join(file.path);
        let parent = target.parent().unwrap_or(dir);
        fs::create_dir_all(parent).map_err(|source| InitError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
        fs::write(&target, file.contents).map_err(|source| InitError::Write {
            path: target.clone(),
            source,
        })?;
        written.push(file.path);
    }
    tracing::debug!(template = %template, dir = %dir.display(), files = written.len(), "project written");
    Ok(Written {
        files: written,
        overwritten: conflicts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(template: Template) -> Vec<&'static str> {
        template.files().iter().map(|file| file.path).collect()
    }

    #[test]
    fn rust_template_is_the_services_plus_a_standalone_workspace() {
        let paths = paths(Template::Rust);
        for wanted in [
            "Cargo.toml",
            "Cargo.lock",
            "aliases.json",
            ".env.example",
            ".gitignore",
            "README.md",
            "services/session/Cargo.toml",
            "services/writer/Cargo.toml",
            "services/reader/Cargo.toml",
        ] {
            assert!(paths.contains(&wanted), "{wanted} missing from {paths:?}");
        }
        assert!(!paths.iter().any(|path| path.contains("target/")));
        let manifest = file(Template::Rust, "Cargo.toml");
        // Each Rust service by name: a `services/*` glob breaks on a Node service there.
        assert!(
            manifest.contains(
                "members = [\"services/reader\", \"services/session\", \"services/writer\"]"
            ),
            "{manifest}"
        );
        assert!(manifest.contains("session = { path = \"services/session\" }"));
        // Only what the services use: the CLI's own dependencies stay behind.
        assert!(!manifest.contains("clap"), "{manifest}");
        assert!(!manifest.contains("toml_edit"), "{manifest}");
    }

    #[test]
    fn every_template_ignores_secrets_and_build_output() {
        for template in [Template::Rust, Template::Node] {
            let gitignore = file(template, ".gitignore");
            for wanted in [".env", ".stack/", "target/", "node_modules/"] {
                assert!(
                    gitignore.lines().any(|line| line == wanted),
                    "{template}: {wanted} not in {gitignore:?}"
                );
            }
            let example = file(template, ".env.example");
            for line in example.lines().filter(|line| !line.starts_with('#')) {
                assert!(
                    line.is_empty() || line.ends_with('='),
                    "{template}: .env.example carries a value: {line}"
                );
            }
        }
        assert!(!paths(Template::Node)
            .iter()
            .any(|path| path.contains("node_modules")));
    }

    fn file(template: Template, path: &str) -> String {
        let file = template
            .files()
            .iter()
            .find(|file| file.path == path)
            .unwrap_or_else(|| panic!("{template} has no {path}"));
        String::from_utf8(file.contents.to_vec()).expect("text file")
    }

    #[test]
    fn refuses_to_overwrite_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("aliases.json"), "mine").unwrap();
        fs::write(dir.path().join("README.md"), "mine too").unwrap();
        let error = write_project(dir.path(), Template::Rust, false).unwrap_err();
        assert!(
            matches!(&error, InitError::Conflicts { paths, .. } if paths == &["README.md", "aliases.json"]),
            "{error}"
        );
        assert!(!dir.path().join("services").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("aliases.json")).unwrap(),
            "mine"
        );

        let written = write_project(dir.path(), Template::Rust, true).unwrap();
        assert_eq!(written.overwritten, ["README.md", "aliases.json"]);
        assert_ne!(
            fs::read_to_string(dir.path().join("aliases.json")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_directory_in_the_way_is_an_error_even_with_force() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("aliases.json")).unwrap();
        let error = write_project(dir.path(), Template::Rust, true).unwrap_err();
        assert!(matches!(error, InitError::InTheWay { needed: "file", .. }));
        fs::remove_dir(dir.path().join("aliases.json")).unwrap();
        fs::write(dir.path().join("services"), "a file").unwrap();
        let error = write_project(dir.path(), Template::Rust, true).unwrap_err();
        assert!(matches!(
            error,
            InitError::InTheWay {
                needed: "directory",
                ..
            }
        ));
    }
}
