//! The everyday commands around the workflow, through the real binary: shell completions (the
//! scripts, and the names they complete from a project), `stack open`, and a closed stdout.

use std::process::{Command, Stdio};

mod support;
use support::{Project, STACK};

#[test]
fn every_shell_gets_a_completion_script_and_bash_accepts_it() {
    let project = Project::empty();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = project.stack_ok(&["completions", shell]);
        assert!(script.contains("stack"), "{shell}: {script}");
        assert!(script.len() > 100, "{shell}: {script}");
    }
    let script = project.stack_ok(&["completions", "bash"]);
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .expect("bash runs");
    std::io::Write::write_all(bash.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n refused:\n{script}");
    let refused = project.stack(&["completions", "tcsh"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
}

/// What the bash script asks `stack` for when the user presses Tab after `words`.
fn complete(project: &Project, words: &[&str]) -> Vec<String> {
    let output = Command::new(STACK)
        .arg("--")
        .args(words)
        .current_dir(project.path())
        .env("COMPLETE", "bash")
        .env("_CLAP_IFS", "\u{b}")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .output()
        .expect("stack runs");
    String::from_utf8(output.stdout)
        .unwrap()
        .split('\u{b}')
        .map(|word| word.trim().to_string())
        .filter(|word| !word.is_empty())
        .collect()
}

#[test]
fn completion_offers_the_projects_services_deployments_and_aliases() {
    let project = Project::fixture("node-pair");
    project.write(
        ".stack/state.json",
        r#"{"aliases": {"pair.localhost": {"kind": "plain", "target": "hello", "created": 1}},
            "deployments": {"hello": {"current": "hello-abcdefghij",
              "deployments": [{"id": "hello-abcdefghij", "service": "hello", "created_ms": 1,
                "kind": "npm", "program": "npm", "fingerprint": "x"}]}}}"#,
    );
    let subcommands = complete(&project, &["stack", ""]);
    for wanted in ["up", "alias", "scale", "completions", "open"] {
        assert!(subcommands.contains(&wanted.to_string()), "{subcommands:?}");
    }
    let targets = complete(&project, &["stack", "scale", ""]);
    for wanted in ["hello", "crasher", "hello-abcdefghij"] {
        assert!(targets.contains(&wanted.to_string()), "{targets:?}");
    }
    // Flags are offered beside the names; the names are only the right kind.
    let names = |words: &[&str]| -> Vec<String> {
        complete(&project, words)
            .into_iter()
            .filter(|word| !word.starts_with('-'))
            .collect()
    };
    assert_eq!(names(&["stack", "rm", ""]), ["hello-abcdefghij"]);
    assert_eq!(names(&["stack", "alias", "rm", ""]), ["pair.localhost"]);
    // `restart` takes one instance too, by the name its log lines carry.
    let restartable = names(&["stack", "restart", "hel"]);
    assert_eq!(restartable, ["hello", "hello-abcdefghij", "hello.0"]);
    let started = complete(&project, &["stack", "logs", "cr"]);
    assert_eq!(started, ["crasher"]);
}

#[test]
fn open_prints_the_first_aliass_url_with_the_last_port() {
    let project = Project::empty();
    // No alias yet: the dashboard, on the default port.
    assert_eq!(
        project.stack_ok(&["open", "--print"]),
        "http://stack.localhost:3000/\n"
    );
    let unknown = project.stack(&["open", "nope.localhost", "--print"]);
    assert_eq!(unknown.code, 1, "{}", unknown.all());
    project.write(
        ".stack/state.json",
        r#"{"aliases": {"b.localhost": {"kind": "plain", "target": "x", "created": 1},
                        "a.localhost": {"kind": "plain", "target": "x", "created": 1}},
            "proxy_port": 4123}"#,
    );
    assert_eq!(
        project.stack_ok(&["open", "--print"]),
        "http://a.localhost:4123/\n"
    );
    assert_eq!(
        project.stack_ok(&["open", "b", "--print"]),
        "http://b.localhost:4123/\n"
    );
    // With no display to open a browser on, the URL is printed.
    let mut command = project.command(&["open"]);
    command.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY");
    let run = project.run(&mut command);
    assert_eq!(run.stdout, "http://a.localhost:4123/\n", "{}", run.all());
}

fn doctor(
    project: &Project,
    path: Option<&std::path::Path>,
    port: u16,
) -> (i32, serde_json::Value) {
    let mut command = project.command(&["doctor", "--json", "--port", &port.to_string()]);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let run = project.run(&mut command);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}", run.all()));
    (run.code, report)
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {report}"))
}

#[test]
fn doctor_finds_everything_in_place_and_says_what_is_missing_and_who_holds_the_port() {
    support::require("redis-server");
    support::require("node");
    let project = Project::fixture("node-pair");
    let port = support::free_port();
    let (code, report) = doctor(&project, None, port);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    for tool in ["redis-server", "node", "npm"] {
        let found = check(&report, tool);
        assert_eq!(found["ok"], true, "{found}");
        assert!(
            found["detail"]
                .as_str()
                .unwrap()
                .chars()
                .any(|c| c.is_ascii_digit()),
            "a version: {found}"
        );
    }
    assert_eq!(check(&report, &format!("port {port}"))["detail"], "free");

    // Without redis-server on PATH, and with the port held by another program.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["node", "npm"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
            .unwrap();
        std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
    }
    let held = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, report) = doctor(&project, Some(bin.path()), port);
    drop(held);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ok"], false);
    let redis = check(&report, "redis-server");
    assert_eq!(redis["ok"], false);
    assert!(
        redis["fix"]
            .as_str()
            .unwrap()
            .contains("install redis-server"),
        "{redis}"
    );
    let busy = check(&report, &format!("port {port}"));
    assert_eq!(busy["ok"], false, "{busy}");
    let own = std::process::id();
    assert!(
        busy["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("(pid {own})")),
        "the test process holds it: {busy}"
    );
    assert!(busy["fix"].as_str().unwrap().contains("--port"), "{busy}");
    // The port it suggests is one that is free.
    let suggested: u16 = busy["fix"]
        .as_str()
        .unwrap()
        .rsplit("--port ")
        .next()
        .and_then(|rest| rest.trim_end_matches(['`', '.']).parse().ok())
        .unwrap_or_else(|| panic!("{busy}"));
    assert_ne!(suggested, port);
    assert!(std::net::TcpListener::bind(("127.0.0.1", suggested)).is_ok());
}

#[test]
fn doctor_checks_what_declared_services_run_and_a_stack_toml_that_up_would_refuse() {
    let project = Project::empty();
    project.write(
        "stack.toml",
        "[services.api]\npath = \".\"\nrun = \"sh -c 'exit 0'\"\n\n\
         [services.jobs]\npath = \".\"\nkind = \"worker\"\n\
         build = \"stack-test-missing-compiler build\"\nrun = [\"stack-test-missing-runtime\", \"jobs.x\"]\n",
    );
    project.write(".env", "SESSION_SECRET=doctor-declared-canary\n");
    let port = support::free_port();
    let (code, report) = doctor(&project, None, port);
    assert_eq!(code, 1, "{report:#}");
    let found = check(&report, "programs of stack.toml");
    assert_eq!(found["ok"], true, "{found}");
    assert!(
        found["detail"].as_str().unwrap().starts_with("sh (/"),
        "{found}"
    );
    for program in ["stack-test-missing-compiler", "stack-test-missing-runtime"] {
        let missing = check(&report, program);
        assert_eq!(missing["ok"], false, "{missing}");
        assert!(
            missing["detail"]
                .as_str()
                .unwrap()
                .contains("needed for `jobs`"),
            "{missing}"
        );
        assert!(
            missing["fix"].as_str().unwrap().contains("stack.toml"),
            "{missing}"
        );
    }

    // A file `stack up` would refuse is a problem with its place in the file.
    project.write("stack.toml", "[services.api]\npath = \".\"\nrun = 7\n");
    let (code, report) = doctor(&project, None, port);
    assert_eq!(code, 1, "{report:#}");
    let services = check(&report, "services");
    assert_eq!(services["ok"], false, "{services}");
    assert!(
        services["detail"]
            .as_str()
            .unwrap()
            .contains("stack.toml:3"),
        "{services}"
    );

    // A `.env` line `stack up --dotenv` would refuse, by its place, its value never shown.
    project.write(
        ".env",
        "SESSION_SECRET=doctor-declared-canary\nNOT A LINE canary-2\n",
    );
    let (_, report) = doctor(&project, None, port);
    let lines = check(&report, ".env lines");
    assert_eq!(lines["ok"], false, "{lines}");
    assert!(
        lines["detail"].as_str().unwrap().starts_with(".env:2:1: "),
        "{lines}"
    );
    assert!(!report.to_string().contains("canary"), "{report}");

    // Nothing to run at all: said, with how to get something.
    std::fs::remove_file(project.path().join("stack.toml")).unwrap();
    let (code, report) = doctor(&project, None, port);
    assert_eq!(code, 1, "{report:#}");
    let services = check(&report, "services");
    assert!(
        services["detail"]
            .as_str()
            .unwrap()
            .contains("no services found"),
        "{services}"
    );
    assert!(
        services["fix"].as_str().unwrap().contains("stack init"),
        "{services}"
    );
}

#[test]
fn doctor_checks_the_local_ca_its_trust_and_the_https_port() {
    let project = Project::fixture("node-pair");
    let home = project.stack_home.path();
    let (port, https_port) = (support::free_port(), support::free_port());
    let doctor_https = || {
        let mut command = project.command(&[
            "doctor",
            "--json",
            "--port",
            &port.to_string(),
            "--https-port",
            &https_port.to_string(),
        ]);
        let run = project.run(&mut command);
        let report: serde_json::Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|_| panic!("{}", run.all()));
        report
    };

    // No CA yet: fine, `stack up` makes one; the HTTPS port is free.
    let report = doctor_https();
    let ca = check(&report, "local CA");
    assert_eq!(ca["ok"], true, "{ca}");
    assert!(ca["detail"].as_str().unwrap().contains("none yet"), "{ca}");
    assert_eq!(
        check(&report, &format!("HTTPS port {https_port}"))["detail"],
        "free"
    );

    // A CA (made by `stack trust --print`), not trusted: advice to run `stack trust`.
    project.stack_ok(&["trust", "--print"]);
    let report = doctor_https();
    let ca = check(&report, "local CA");
    assert_eq!(ca["ok"], true, "{ca}");
    assert!(ca["detail"].as_str().unwrap().contains("mode 600"), "{ca}");
    let trust = check(&report, "CA trust");
    assert_eq!(trust["ok"], true, "advice, not a failure: {trust}");
    assert!(
        trust["fix"].as_str().unwrap().contains("`stack trust`"),
        "{trust}"
    );

    // Trusted (into a temporary system store), and the HTTPS port held by this test.
    let store = tempfile::tempdir().unwrap();
    let mut trust_command = project.command(&["trust"]);
    trust_command
        .env("STACK_TRUST_SYSTEM_DIR", store.path())
        .env("STACK_TRUST_UPDATE_COMMAND", "");
    let run = project.run(&mut trust_command);
    assert_eq!(run.code, 0, "{}", run.all());
    let held = std::net::TcpListener::bind(("127.0.0.1", https_port)).unwrap();
    let report = doctor_https();
    drop(held);
    let trust = check(&report, "CA trust");
    assert_eq!(trust["ok"], true, "{trust}");
    assert!(trust.get("fix").is_none(), "{trust}");
    let busy = check(&report, &format!("HTTPS port {https_port}"));
    assert_eq!(busy["ok"], false, "{busy}");
    assert!(
        busy["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("(pid {})", std::process::id())),
        "{busy}"
    );
    assert!(
        busy["fix"].as_str().unwrap().contains("--https-port"),
        "{busy}"
    );

    // A key others can read: a problem, with the fix.
    let key = home.join("ca-key.pem");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let report = doctor_https();
    assert_eq!(report["ok"], false, "{report:#}");
    let ca = check(&report, "local CA");
    assert_eq!(ca["ok"], false, "{ca}");
    assert!(ca["fix"].as_str().unwrap().contains("chmod 600"), "{ca}");
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!report.to_string().contains(key_line));
}

/// `stack ls | head -1` and the like: a reader that goes away ends the command as it ends
/// `ls` (SIGPIPE), never with a panic and a backtrace.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let project = Project::empty();
    project.write(
        "stack.toml",
        "[services.web]\nrun = \"python3 -m http.server $PORT\"\n",
    );
    project.write("services/web/index.html", "hi");
    for args in [&["ls"][..], &["config"], &["completions", "bash"]] {
        let mut child = project
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end closes before the command writes a byte.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            output.status.success() || output.status.signal() == Some(libc_sigpipe()),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}
