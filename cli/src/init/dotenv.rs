//! Whether a project's `.env` could leak into git: tracked already, or not ignored.
//!
//! Asks git itself (`git ls-files --error-unmatch`, `git check-ignore`), so every `.gitignore`,
//! `.git/info/exclude` and global excludes file counts exactly as git counts it. Outside a git
//! work tree there is nothing to warn about yet: nothing can be committed, and `stack init`
//! writes a `.gitignore` that covers `.env` for when a repository is made. A missing `git`
//! binary or a `.env` that does not exist gives no warning either.

use std::path::Path;
use std::process::{Command, Stdio};

/// A warning to print when `dotenv` (a file of the project at `project_dir`) is tracked by git
/// or not ignored; `None` when it is safe (or git cannot say). The message names the file,
/// never its contents. `stack up` calls this before it reads the file.
pub fn dotenv_warning(project_dir: &Path, dotenv: &Path) -> Option<String> {
    let dotenv = if dotenv.is_absolute() {
        dotenv.to_path_buf()
    } else {
        project_dir.join(dotenv)
    };
    if !dotenv.is_file() {
        return None;
    }
    let shown = dotenv
        .strip_prefix(project_dir)
        .unwrap_or(&dotenv)
        .display()
        .to_string();
    let dir = dotenv.parent().unwrap_or(project_dir);
    let file_name = dotenv.file_name()?;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .arg("--")
            .arg(file_name)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .and_then(|status| status.code())
    };
    // 0: tracked; 1: not tracked; 128: not a repository (or no git): no warning.
    match git(&["ls-files", "--error-unmatch"]) {
        Some(0) => {
            return Some(format!(
                "`{shown}` is tracked by git, so its secrets are in the repository. Run `git rm --cached {shown}`, add it to `.gitignore`, and change the secrets it held."
            ))
        }
        Some(1) => {}
        _ => return None,
    }
    // 0: ignored; 1: not ignored; 128: error.
    match git(&["check-ignore", "-q"]) {
        Some(1) => Some(format!(
            "`{shown}` is not ignored by git, so a `git add .` would commit its secrets. Add `{shown}` to `.gitignore`."
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("git is installed (apt-get install git)");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn tracked_unignored_ignored_and_no_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join(".env"), "SESSION_SECRET=canary-secret-1234\n").unwrap();
        // No repository yet: nothing to warn about.
        assert_eq!(dotenv_warning(root, Path::new(".env")), None);

        git(root, &["init", "-q"]);
        let warning = dotenv_warning(root, Path::new(".env")).expect("not ignored");
        assert!(warning.contains("is not ignored"), "{warning}");
        assert!(!warning.contains("canary"), "{warning}");

        fs::write(root.join(".gitignore"), ".env\n").unwrap();
        assert_eq!(dotenv_warning(root, Path::new(".env")), None);
        assert_eq!(dotenv_warning(root, &root.join(".env")), None);

        // Ignored, but committed before the ignore: still tracked.
        git(root, &["add", "-f", ".env"]);
        git(root, &["commit", "-q", "-m", "oops"]);
        let warning = dotenv_warning(root, Path::new(".env")).expect("tracked");
        assert!(warning.contains("is tracked by git"), "{warning}");
        assert!(warning.contains("git rm --cached .env"), "{warning}");
        assert!(!warning.contains("canary"), "{warning}");

        // A file that does not exist cannot leak.
        assert_eq!(dotenv_warning(root, Path::new("other.env")), None);
    }

    #[test]
    fn a_dotenv_in_a_subdirectory_is_checked_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        fs::create_dir(root.join("config")).unwrap();
        fs::write(root.join("config/app.env"), "A=1\n").unwrap();
        let warning = dotenv_warning(root, Path::new("config/app.env")).unwrap();
        assert!(
            warning.starts_with("`config/app.env` is not ignored"),
            "{warning}"
        );
        fs::write(root.join(".gitignore"), "*.env\n").unwrap();
        assert_eq!(dotenv_warning(root, Path::new("config/app.env")), None);
    }
}
