//! `stack init`, run as the real binary into temp directories: each template's files are
//! written, a second `stack init` refuses to overwrite (and writes nothing), `--force` does
//! overwrite, and the Rust project builds on its own (one `cargo build`, with the target dir
//! shared under the workspace's `target/init-test` so the cache is reused between runs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn stack(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_stack"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run the stack binary");
    let dir = cwd.display().to_string();
    Run {
        code: output.status.code().expect("stack exits, not killed"),
        stdout: String::from_utf8(output.stdout)
            .unwrap()
            .replace(&dir, "[DIR]"),
        stderr: String::from_utf8(output.stderr)
            .unwrap()
            .replace(&dir, "[DIR]"),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Every file under `dir`, relative, sorted (skipping build output).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n == "target" || n == "node_modules")
                {
                    continue;
                }
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn rust_template_writes_the_services_refuses_to_overwrite_and_builds() {
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "demo"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let project = temp.path().join("demo");

    // The services are this repository's, file for file and byte for byte.
    let services = files_under(&repo_root().join("services"));
    assert!(services.contains(&"writer/Cargo.toml".to_string()));
    for file in &services {
        let copied = fs::read(project.join("services").join(file))
            .unwrap_or_else(|_| panic!("services/{file} was not written"));
        assert_eq!(
            copied,
            fs::read(repo_root().join("services").join(file)).unwrap(),
            "services/{file} differs from the repository's"
        );
    }
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "aliases.json",
        ".env.example",
        ".gitignore",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        fs::read_to_string(repo_root().join("aliases.json")).unwrap()
    );
    let gitignore = fs::read_to_string(project.join(".gitignore")).unwrap();
    for wanted in [".env", ".stack/", "target/", "node_modules/"] {
        assert!(gitignore.lines().any(|l| l == wanted), "{gitignore}");
    }
    // Standalone: nothing points back into this repository.
    let manifest = fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(".."), "{manifest}");
    assert!(manifest.contains("[workspace.dependencies]"), "{manifest}");
    // The two next commands, after a `cd`.
    assert!(
        run.stdout.ends_with(
            "    cd demo\n    stack alias counter-demo.localhost --rules aliases.json\n    stack up\n"
        ),
        "{}",
        run.stdout
    );

    // A second init refuses, names the files, and changes nothing.
    fs::write(
        project.join("aliases.json"),
        "{\"rules\":[{\"dest\":\"mine\"}]}",
    )
    .unwrap();
    let before = files_under(&project);
    let run = stack(temp.path(), &["init", "demo"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("Error! ")
            && run
                .stderr
                .contains("already exist in `demo`:\n  .env.example\n"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  aliases.json\n"), "{}", run.stderr);
    assert!(
        run.stderr.contains("\n  services/writer/Cargo.toml\n"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(files_under(&project), before);
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        "{\"rules\":[{\"dest\":\"mine\"}]}"
    );

    // `--force` overwrites.
    let run = stack(temp.path(), &["init", "demo", "--force"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("overwritten"), "{}", run.stdout);
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        fs::read_to_string(repo_root().join("aliases.json")).unwrap()
    );

    // The project builds on its own. The target dir is shared between runs of this test (and
    // outside the project, so the tree check above is unaffected).
    let target_dir = repo_root().join("target/init-test");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build in the new project failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for binary in ["writer", "reader"] {
        assert!(
            target_dir.join("debug").join(binary).is_file(),
            "{binary} was not built"
        );
    }
}

#[test]
fn node_template_writes_the_node_services() {
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "--template", "node"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Initialised in the current directory: no `cd` to print.
    assert!(!run.stdout.contains("cd "), "{}", run.stdout);
    assert!(run.stdout.contains("stack up"), "{}", run.stdout);

    let source = repo_root().join("templates/node");
    let expected = files_under(&source);
    assert!(expected.contains(&"services/writer/index.js".to_string()));
    let written = files_under(temp.path());
    for file in &expected {
        assert!(written.contains(file), "{file} not written: {written:?}");
        if file != ".gitignore" {
            assert_eq!(
                fs::read(temp.path().join(file)).unwrap(),
                fs::read(source.join(file)).unwrap(),
                "{file}"
            );
        }
    }
    assert!(!written.iter().any(|f| f.contains("node_modules")));
    let gitignore = fs::read_to_string(temp.path().join(".gitignore")).unwrap();
    for wanted in [".env", ".stack/", "target/", "node_modules/"] {
        assert!(gitignore.lines().any(|l| l == wanted), "{gitignore}");
    }
    let example = fs::read_to_string(temp.path().join(".env.example")).unwrap();
    assert!(example.contains("SESSION_SECRET="));

    let again = stack(temp.path(), &["init", "--template", "node"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("\n  package.json\n"),
        "{}",
        again.stderr
    );
}

#[test]
fn bad_arguments() {
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "--template", "go"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    fs::write(temp.path().join("taken"), "a file").unwrap();
    let run = stack(temp.path(), &["init", "taken"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Error! `taken` exists and is not a directory"),
        "{}",
        run.stderr
    );
}
