//! `stack exec` through the real binary: a one-off command gets what the running stack gives
//! a service (the `.env`, the generated secret, the managed Redis with its password, the
//! service's own `env`) over the caller's environment, never a `PORT`; its exit status is the
//! command's; a `.env` save reaches the next one; the dashboard's environment view shows the
//! same (secrets as `***`), and nothing secret reaches stack's own output.

mod support;

use nix::sys::signal::Signal;
use support::{raw_http, Project, Up, COMMAND_DEADLINE, SLOW_SERVICE};

const TOKEN_CANARY: &str = "CANARY-exec-token-4d1e";

/// `stack exec web -- sh -c SCRIPT` with `CALLER=kept` (and a `PORT`) in its own environment.
fn exec(project: &Project, script: &str) -> support::Run {
    let mut command = project.command(&["exec", "web", "--", "sh", "-c", script]);
    command.env("CALLER", "kept").env("PORT", "7777");
    project.run(&mut command)
}

#[test]
fn exec_runs_a_command_with_the_services_environment_and_its_exit_status() {
    support::require("python3");
    support::require("redis-cli");
    let project = Project::empty();
    project.write("services/web/app.py", SLOW_SERVICE);
    project.write(
        "stack.toml",
        "[services.web]\nrun = [\"python3\", \"app.py\"]\nenv = { SERVICE_ONLY = \"yes\", LOG_REQUESTS = \"0\" }\n",
    );
    project.write(
        ".env",
        &format!("FROM_DOTENV=one\nAPI_TOKEN={TOKEN_CANARY}\n"),
    );
    let mut up = Up::start(&project, &["--dotenv"]);
    up.wait_ready("web");

    // The layers: the `.env`, the service's own, the caller's; its own PORT, not an instance's.
    let run = exec(
        &project,
        &format!("echo \"$FROM_DOTENV $SERVICE_ONLY $CALLER $PORT\"; test \"$API_TOKEN\" = {TOKEN_CANARY} && echo token"),
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(run.stdout, "one yes kept 7777\ntoken\n", "{}", run.all());
    // The generated secret, and the managed Redis, password and all: redis-cli gets in.
    let secret = std::fs::read_to_string(project.path().join(".stack/session-secret")).unwrap();
    let run = exec(
        &project,
        // redis-cli 7.0's `-u` sends an empty user name for `redis://:pw@`, so it gets the
        // password and the port from the URL by hand.
        "printf %s \"$SESSION_SECRET\"; echo; pw=${REDIS_SESSION_URL#redis://:}; \
         REDISCLI_AUTH=${pw%@*} redis-cli -p ${REDIS_SESSION_URL##*:} ping",
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(
        run.stdout,
        format!("{}\nPONG\n", secret.trim()),
        "{}",
        run.all()
    );
    // Its exit status is the command's.
    assert_eq!(exec(&project, "exit 7").code, 7);
    // An instance's name means its service.
    let run = project.stack(&["exec", "web.0", "--", "sh", "-c", "echo $SERVICE_ONLY"]);
    assert_eq!(run.stdout, "yes\n", "{}", run.all());

    // What cannot run says so.
    project
        .stack(&["exec", "web", "--", "no-such-program-here"])
        .assert_refused(&["Error! cannot run `no-such-program-here`: No such file or directory"]);
    project
        .stack(&["exec", "nope", "--", "true"])
        .assert_refused(&["Error! no service or deployment named `nope`"]);

    // A `.env` save: the redeployed service, the next command and the dashboard see it.
    project.write(
        ".env",
        &format!("FROM_DOTENV=two\nAPI_TOKEN={TOKEN_CANARY}\n"),
    );
    up.wait_for_nth("> Ready! http://web-", 2, COMMAND_DEADLINE);
    let run = exec(&project, "echo \"$FROM_DOTENV\"");
    assert_eq!(run.stdout, "two\n", "{}", run.all());
    let env = raw_http::request(up.port, "GET", "/api/env", &[("Host", "stack.localhost")]);
    assert_eq!(env.status, 200, "{}", env.body);
    for shown in [
        r#"["FROM_DOTENV","two"]"#,
        r#"["API_TOKEN","***"]"#,
        r#"["SESSION_SECRET","***"]"#,
        r#""service_env":{"web":[["LOG_REQUESTS","0"],["SERVICE_ONLY","yes"]]}"#,
    ] {
        assert!(env.body.contains(shown), "{shown} in {}", env.body);
    }
    assert!(!env.body.contains(TOKEN_CANARY), "{}", env.body);
    assert!(!env.body.contains(secret.trim()), "{}", env.body);

    let output = up.stop(Signal::SIGINT);
    project
        .stack(&["exec", "web", "--", "true"])
        .assert_refused(&["no `stack up` is running"]);
    for text in [output, project.all_logs()] {
        assert!(!text.contains(TOKEN_CANARY), "{text}");
        assert!(!text.contains(secret.trim()), "{text}");
    }
}
