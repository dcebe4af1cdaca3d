//! The dashboard in a real browser (issue 17): headless Chromium, driven by
//! `tests/browser/dashboard.mjs` through playwright-core, opens `http://stack.localhost:PORT`
//! of the demo: both deployments listed, a curl request shown within 1 s with its rule,
//! deployment and instance, the log view following reader while the page scales it to two
//! instances (and `stack ls` agrees), the login's session decoded in the sessions view and
//! deleted from there. It takes the screenshot the README shows (`docs/dashboard.png`).
//! `tests/browser/dashboard_actions.mjs` clicks the other actions on the hello fixture with two
//! deployments: rollback, remove a deployment, restart an instance; `stack ls` agrees after.

mod support;
use support::{browser, require, workspace, Project, Up, COMMAND_DEADLINE};

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

#[test]
fn the_dashboards_rollback_remove_and_restart_in_headless_chromium() {
    require("redis-server");
    require("curl");
    browser::browser_dir();
    let project = Project::hello("dashboard-actions");
    let mut up = Up::start(&project, &[]);
    up.wait_watching(&["hello"]);
    let first = project.live("hello")["id"].as_str().unwrap().to_owned();
    project.set_message("hello v2");
    up.wait_for_nth("> Ready! http://hello-", 2, COMMAND_DEADLINE);
    let second = project.live("hello")["id"].as_str().unwrap().to_owned();
    assert_ne!(first, second);

    let port = up.port.to_string();
    browser::run_script(
        "dashboard_actions.mjs",
        &[port.as_ref(), first.as_ref(), second.as_ref()],
    );

    let listed = project.ls();
    let ids: Vec<&str> = listed.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, [first.as_str()], "only the rolled-back one is left");
    let live = project.live("hello");
    assert_eq!(live["instances"][0]["restarts"], 2, "{live}");
    assert_eq!(live["instances"][0]["state"], "READY", "{live}");
    assert!(!project
        .path()
        .join(".stack/deployments")
        .join(&second)
        .exists());
    // The rolled-back code answers, from the restarted instance.
    let answer = std::process::Command::new("curl")
        .args(["-sf", "-H", "Host: hello.localhost"])
        .arg(up.url("127.0.0.1", "/"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&answer.stdout), "hello v1\n");
}
