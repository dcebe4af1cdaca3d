//! The dashboard in a real browser (issue 17): headless Chromium, driven by
//! `tests/browser/dashboard.mjs` through playwright-core, opens `http://stack.localhost:PORT`
//! of the demo: both deployments listed, a curl request shown within 1 s with its rule,
//! deployment and instance, the log view following reader while the page scales it to two
//! instances (and `stack ls` agrees), the login's session decoded in the sessions view and
//! deleted from there. It takes the screenshot the README shows (`docs/dashboard.png`).

use std::path::Path;
use std::process::Command;

mod support;
use support::{require, workspace, Project, Up};

#[test]
fn the_dashboard_in_headless_chromium() {
    for tool in ["redis-server", "node", "chromium", "curl"] {
        require(tool);
    }
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in {}",
        browser_dir.display()
    );
    let secret = "canary-dashboard-secret-81c3e0";
    let project = Project::demo(secret);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let writer = workspace().join("services/writer").display().to_string();
    let reader = workspace().join("services/reader").display().to_string();
    let mut up = Up::start(&project, &[&writer, &reader, "--dotenv", "--no-watch"]);
    up.wait_ready("writer");
    up.wait_ready("reader");

    let screenshot = workspace().join("docs/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let output = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(up.port.to_string())
        .arg(&screenshot)
        .current_dir(&browser_dir)
        .output()
        .expect("node runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the browser test failed:\n{printed}"
    );
    assert!(printed.contains("ok"), "{printed}");

    let reader_live = project.live("reader");
    assert_eq!(reader_live["ready"], 2, "{reader_live}");
    assert_eq!(reader_live["instances"].as_array().unwrap().len(), 2);
    assert!(
        !up.output().contains(secret),
        "the secret shows in stack up's output"
    );
}
