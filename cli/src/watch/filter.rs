//! Which changed paths are noise: build output and tool directories (`target/`, `.git/`,
//! `node_modules/`, `.stack/`, a Python service's `.venv/`, `venv/` and `__pycache__/`), editor temp and backup files (`*.swp`, `*~`, `#*#`, `.#*`,
//! vim's `4913` probe), and whatever the `.gitignore` files around the watched directories
//! ignore (the `ignore` crate's gitignore matcher, one per file, rooted where the file is).
//! Pure path logic once built: no watching, no I/O per check.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use ignore::gitignore::Gitignore;

/// Directory names whose contents never trigger a build.
const IGNORED_DIRS: [&str; 7] = [
    "target",
    ".git",
    "node_modules",
    ".stack",
    ".venv",
    "venv",
    "__pycache__",
];

/// The noise filter for a set of watched directories.
#[derive(Debug, Default)]
pub struct Filter {
    gitignores: Vec<Gitignore>,
}

impl Filter {
    /// Reads every `.gitignore` inside the roots (outside ignored directories) and in their
    /// ancestors, since a project's top-level `.gitignore` applies to its services too.
    pub fn new(roots: &[PathBuf]) -> Filter {
        let mut files: Vec<PathBuf> = Vec::new();
        for root in roots {
            for ancestor in root.ancestors().skip(1) {
                let file = ancestor.join(".gitignore");
                if file.is_file() {
                    files.push(file);
                }
            }
            collect_gitignores(root, &mut files);
        }
        files.sort();
        files.dedup();
        let gitignores = files
            .iter()
            .filter_map(|file| {
                let (matcher, error) = Gitignore::new(file);
                if let Some(error) = error {
                    tracing::warn!(%error, file = %file.display(), "part of a .gitignore was not understood");
                }
                (!matcher.is_empty()).then_some(matcher)
            })
            .collect();
        Filter { gitignores }
    }

    /// Whether a change of `path` (absolute) should be left alone.
    pub fn is_ignored(&self, path: &Path) -> bool {
        if path
            .components()
            .any(|component| IGNORED_DIRS.iter().any(|dir| component.as_os_str() == *dir))
        {
            return true;
        }
        if path.file_name().is_some_and(is_editor_temp) {
            return true;
        }
        let is_dir = path.is_dir();
        self.gitignores.iter().any(|matcher| {
            path.starts_with(matcher.path())
                && matcher
                    .matched_path_or_any_parents(path, is_dir)
                    .is_ignore()
        })
    }
}

/// Swap, backup and lock files of vim, emacs and friends.
pub fn is_editor_temp(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name == "4913"
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#') && name.len() > 1)
        || [".swp", ".swo", ".swx"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

fn collect_gitignores(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if !IGNORED_DIRS.iter().any(|ignored| name == *ignored) {
                collect_gitignores(&entry.path(), files);
            }
        } else if name == ".gitignore" {
            files.push(entry.path());
        }
    }
}
