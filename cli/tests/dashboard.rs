//! The dashboard in a real browser (issue 17): headless Chromium, driven by
//! `tests/browser/dashboard.mjs` through playwright-core, opens `http://stack.localhost:PORT`
//! of the demo: both deployments listed, a curl request shown within 1 s with its rule,
//! deployment and instance, the log view following reader while the page scales it to two
//! instances (and `stack ls` agrees), the login's session decoded in the sessions view and
//! deleted from there. It takes the screenshot the README shows (`docs/dashboard.png`).

mod support;
use support::{browser, require, workspace, Project};

#[test]
fn the_dashboard_in_headless_chromium() {
    require("curl");
    browser::browser_dir();
    let secret = "canary-dashboard-secret-81c3e0";
    let project = Project::demo(secret);
    let up = browser::demo_up(&project);

    let screenshot = workspace().join("docs/dashboard.png");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    let port = up.port.to_string();
    browser::run_script("dashboard.mjs", &[port.as_ref(), screenshot.as_os_str()]);

    let reader_live = project.live("reader");
    assert_eq!(reader_live["ready"], 2, "{reader_live}");
    assert_eq!(reader_live["instances"].as_array().unwrap().len(), 2);
    assert!(
        !up.output().contains(secret),
        "the secret shows in stack up's output"
    );
}
