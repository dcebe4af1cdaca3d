//! Headless Chromium tests (Debian's chromium, driven by playwright-core from
//! `cli/tests/browser/`): the demo stack they open, and their scripts run with node.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{require, workspace, Project, Up};

/// `cli/tests/browser`, after checking that node, chromium and playwright-core are there.
pub fn browser_dir() -> PathBuf {
    for tool in ["node", "chromium"] {
        require(tool);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in {}",
        dir.display()
    );
    dir
}

/// The 2017 demo (the workspace's writer and reader, `counter-demo.localhost` aliased by
/// `aliases.json`) under `stack up --dotenv --no-watch`, both services ready.
pub fn demo_up(project: &Project) -> Up {
    require("redis-server");
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let writer = workspace().join("services/writer").display().to_string();
    let reader = workspace().join("services/reader").display().to_string();
    let mut up = Up::start(project, &[&writer, &reader, "--dotenv", "--no-watch"]);
    up.wait_ready("writer");
    up.wait_ready("reader");
    up
}

/// Runs `node SCRIPT ARGS..` in `cli/tests/browser`; fails the test with what it printed unless
/// it exits 0 having printed `ok`. Returns what it printed.
pub fn run_script(script: &str, args: &[&OsStr]) -> String {
    let dir = browser_dir();
    let output = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{printed}");
    assert!(
        output.status.success() && printed.contains("ok"),
        "the browser test {script} failed:\n{printed}"
    );
    printed
}
