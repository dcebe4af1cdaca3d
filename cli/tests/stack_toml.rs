//! `stack.toml` through the real binary: every bad-file error as a snapshot, `stack config
//! --json`'s round trip, and `stack up` with declared services (real shell and Python
//! processes): `depends_on` order and its reverse at the stop, a failing one-shot, a slow
//! health check gating traffic and a redeploy, a crashing worker's backoff, a `stack.toml`
//! saved while it runs.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{raw_http, under_load, Project, Up, COMMAND_DEADLINE, SLOW_SERVICE};

/// What `stack config` says about a bad `stack.toml`, after checking that `stack up` refuses it
/// the same way and starts nothing.
fn rejected(text: &str) -> String {
    let project = Project::empty();
    project.write("services/api/app.sh", "exit 0\n");
    project.write("stack.toml", text);
    let config = project.stack(&["config"]);
    assert_eq!(config.code, 1, "{}", config.all());
    assert_eq!(config.stdout, "");
    let up = project.stack(&["up", "--port", "0", "--no-watch"]);
    assert_eq!(up.code, 1, "{}", up.all());
    assert!(
        !project.path().join(".stack/deployments").exists(),
        "nothing may be built: {}",
        up.all()
    );
    let config_errors: Vec<&str> = config
        .stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .collect();
    let up_errors: Vec<&str> = up.stderr.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(config_errors, up_errors);
    config.stderr
}

macro_rules! error_snapshot {
    ($name:ident, $text:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), rejected($text));
        }
    };
}

error_snapshot!(
    error_unknown_key,
    "[services.api]\nrun = \"sh app.sh\"\ndepend_on = { db = \"healthy\" }\n"
);
error_snapshot!(
    error_unknown_file_key,
    "[service.api]\nrun = \"sh app.sh\"\n"
);
error_snapshot!(
    error_wrong_type,
    "[services.api]\nrun = 42\ninstances = \"two\"\n"
);
error_snapshot!(error_no_run, "[services.api]\nkind = \"web\"\n");
error_snapshot!(
    error_unknown_dependency,
    "[services.api]\nrun = \"sh app.sh\"\ndepends_on = { dbb = \"healthy\" }\n\n[services.db]\npath = \"services/api\"\nrun = \"sh app.sh\"\n"
);
error_snapshot!(
    error_bad_duration,
    "[services.api]\nrun = \"sh app.sh\"\nstop_timeout = \"5 seconds\"\nhealth = { http = \"/healthz\", interval = \"1.5s\" }\n"
);
error_snapshot!(
    error_cycle,
    "[services.a]\npath = \"services/api\"\nrun = \"sh app.sh\"\ndepends_on = { b = \"started\" }\n\n[services.b]\npath = \"services/api\"\nrun = \"sh app.sh\"\ndepends_on = { c = \"healthy\" }\n\n[services.c]\npath = \"services/api\"\nrun = \"sh app.sh\"\ndepends_on = { a = \"healthy\" }\n"
);
error_snapshot!(
    error_worker_with_http_health,
    "[services.api]\nrun = \"sh app.sh\"\nkind = \"worker\"\nhealth = { http = \"/healthz\" }\n"
);
error_snapshot!(
    error_bad_choices,
    "[services.api]\nrun = \"sh app.sh\"\nrestart = \"on-fail\"\nkind = \"daemon\"\nstop_signal = \"SIGWHAT\"\ndepends_on = { db = \"ready\" }\n\n[services.db]\npath = \"services/api\"\nrun = \"sh app.sh\"\n"
);
error_snapshot!(
    error_zero_durations,
    "[services.api]\nrun = \"sh app.sh\"\nstop_timeout = \"0s\"\nhealth = { http = \"/healthz\", interval = \"0s\", timeout = \"0ms\", start_period = \"0s\" }\n"
);
error_snapshot!(
    error_every_bad_glob,
    "[services.api]\nrun = \"sh app.sh\"\nwatch = [\"../outside/**\", \"services/api/**\", \"/abs/**\"]\nignore = [\"a[\", \"**/*.log\", \"b{\"]\n"
);
error_snapshot!(
    error_another_tools_word,
    "[services.api]\nrun = \"sh app.sh\"\nenviroment = { A = \"1\" }\nbanana = 1\n"
);
error_snapshot!(
    error_bad_run_is_one_error,
    "[services.a]\nrun = 5\n\n[services.b]\nrun = \"\"\n\n[services.c]\nrun = []\ndepends_on = { a = \"started\", d = \"started\" }\n"
);
error_snapshot!(
    error_health_without_check,
    "[services.api]\nrun = \"sh app.sh\"\nhealth = { interval = \"1s\" }\n"
);
error_snapshot!(error_invalid_toml, "[services.api\nrun = \"sh app.sh\"\n");
error_snapshot!(
    error_several_in_one_file,
    "[services.api]\nrun = \"sh app.sh\"\ncomand = \"x\"\ninstances = 0\n\n[services.worker]\nkind = \"worker\"\n\n[services.Bad]\npath = \"services/api\"\nrun = []\n"
);

#[test]
fn config_json_round_trips_and_names_each_origin() {
    let project = Project::empty();
    project.write("services/api/app.sh", "exit 0\n");
    project.write(
        "stack.toml",
        r#"[services.api]
build = "true"
run = ["sh", "app.sh"]
instances = 2
env = { MODE = "dev", TOKEN = "not-shown" }
health = { http = "/healthz", interval = "500ms", timeout = "1s", retries = 2, start_period = "2s" }
depends_on = { migrate = "completed" }
stop_signal = "INT"
stop_timeout = "3s"
restart = "on-failure"

[services.migrate]
path = "services/api"
run = "sh app.sh"
kind = "worker"
"#,
    );
    let json = project.stack_ok(&["config", "--json"]);
    assert!(!json.contains("not-shown"), "env values are never shown");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let services = value["services"].as_array().unwrap();
    // Dependencies first.
    assert_eq!(services[0]["name"], "migrate");
    assert_eq!(services[0]["restart"]["value"], "never");
    let api = &services[1];
    assert_eq!(api["path"]["from"], "default");
    assert_eq!(api["builder"]["from"], "stack.toml:3");
    assert_eq!(
        api["builder"]["value"]["run"],
        serde_json::json!(["sh", "app.sh"])
    );
    assert_eq!(api["builder"]["value"]["build"], "true");
    assert_eq!(
        api["instances"],
        serde_json::json!({"value": 2, "from": "stack.toml:4"})
    );
    assert_eq!(
        api["health"]["value"]["check"],
        serde_json::json!({"http": "/healthz"})
    );
    assert_eq!(api["health"]["value"]["interval"], "500ms");
    assert_eq!(api["health"]["value"]["start_period"], "2s");
    assert_eq!(api["stop_signal"]["value"], "SIGINT");
    assert_eq!(api["stop_timeout"]["value"], "3s");
    assert_eq!(
        api["restart"],
        serde_json::json!({"value": "on-failure", "from": "stack.toml:10"})
    );
    assert_eq!(
        api["env"]["TOKEN"],
        serde_json::json!({"value": "***", "from": "stack.toml:5"})
    );
    // Read back as the typed model and written again: the same JSON.
    let model: stack::config::model::ResolvedConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&model).unwrap(),
        json.trim_end()
    );
    // The text form names the same origins.
    let text = project.stack_ok(&["config"]);
    assert!(text.contains("stack.toml:7"), "{text}");
}

#[test]
fn without_stack_toml_the_detected_services_are_shown() {
    let project = Project::empty();
    project.write(
        "services/web/package.json",
        r#"{"scripts":{"start":"node index.js"}}"#,
    );
    let text = project.stack_ok(&["config"]);
    assert!(
        text.contains("detected under `services/` (no `stack.toml`)"),
        "{text}"
    );
    assert!(text.contains("npm install, npm start"), "{text}");
    // Named in stack.toml, a detected service keeps how it builds and gains the settings.
    project.write("stack.toml", "[services.web]\nhealth.http = \"/healthz\"\n");
    let json = project.stack_ok(&["config", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let web = &value["services"][0];
    assert_eq!(
        web["builder"],
        serde_json::json!({"value": {"type": "npm"}, "from": "detected"})
    );
    assert_eq!(web["health"]["from"], "stack.toml:2");
}

fn slow_project(healthy_after: &str) -> Project {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/slow/app.py", SLOW_SERVICE);
    project.write("services/slow/version.txt", "one\n");
    project.write(
        "stack.toml",
        &format!(
            "[services.slow]\nrun = [\"python3\", \"app.py\"]\nenv = {{ HEALTHY_AFTER = \"{healthy_after}\" }}\nhealth = {{ http = \"/healthz\", interval = \"200ms\" }}\nstop_timeout = \"2s\"\n"
        ),
    );
    project
}

fn state_of(project: &Project, service: &str) -> String {
    let live = project.live(service);
    live["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_slow_health_check_gets_no_request_before_it_passes_and_ls_shows_starting_then_ready() {
    let project = slow_project("3");
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("slow.0 | listening on", COMMAND_DEADLINE);
    let started = Instant::now();
    assert_eq!(state_of(&project, "slow"), "STARTING");
    // A request sent now waits in the proxy until the instance is healthy, then reaches it.
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", "slow.localhost")]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "one"));
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "answered {:?} after the start, before the health check passed",
        started.elapsed()
    );
    up.wait_ready("slow");
    assert!(started.elapsed() >= Duration::from_millis(2500));
    assert_eq!(state_of(&project, "slow"), "READY");
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", "slow.localhost")]);
    assert_eq!((reply.status, reply.body.as_str()), (200, "one"));
    let output = up.stop(Signal::SIGINT);
    assert!(output.contains("request / healthy=True"), "{output}");
    assert!(
        !output.contains("healthy=False"),
        "a request reached it before it was healthy:\n{output}"
    );
}

/// `GET /` on `host` answers 200 with `body`.
fn assert_serves(up: &Up, host: &str, body: &str) {
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", host)]);
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, body),
        "{host}: {}",
        up.output()
    );
}

fn instances_of(project: &Project, service: &str) -> Option<usize> {
    project.live(service)["instances"].as_array().map(Vec::len)
}

#[test]
fn a_redeploy_swaps_only_once_the_new_deployment_is_healthy_with_no_failed_request() {
    let project = slow_project("2");
    let mut up = Up::start(&project, &[]);
    up.wait_ready("slow");
    let (failed, seen) = under_load(up.port, "slow.localhost", || {
        project.write("services/slow/version.txt", "two\n");
        up.wait_for_nth("> Ready! http://slow-", 2, COMMAND_DEADLINE);
        std::thread::sleep(Duration::from_millis(200));
    });
    let output = up.stop(Signal::SIGINT);
    assert_eq!(failed, 0, "{output}");
    // What each load thread saw, in order: the old version, then the new one, never back.
    for versions in seen {
        assert_eq!(versions, ["one", "two"], "{output}");
    }
    assert!(
        output.contains("request / healthy=True"),
        "no request reached it:\n{output}"
    );
    assert!(
        !output.contains("healthy=False"),
        "a request reached an unhealthy instance:\n{output}"
    );
}

/// `db` (healthy after its check passes), `migrate` (a one-shot), and `api` waiting for both.
fn ordered_project(migrate: &str) -> Project {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/db/app.py", SLOW_SERVICE);
    project.write("services/db/version.txt", "db\n");
    project.write("services/api/app.py", SLOW_SERVICE);
    project.write("services/api/version.txt", "api\n");
    project.write("services/migrate/run.sh", migrate);
    project.write(
        "stack.toml",
        r#"[services.api]
run = "python3 app.py"
depends_on = { db = "healthy", migrate = "completed" }
stop_timeout = "2s"

[services.db]
run = "exec python3 app.py"
env = { HEALTHY_AFTER = "1" }
health = { http = "/healthz", interval = "200ms" }
stop_timeout = "2s"

[services.migrate]
run = "sh run.sh"
kind = "worker"
depends_on = { db = "healthy" }
"#,
    );
    project
}

fn line_of(output: &str, needle: &str) -> usize {
    output
        .lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}` in:\n{output}"))
}

#[test]
fn depends_on_orders_the_start_and_the_stop_is_reversed() {
    let project = ordered_project("echo migrating; sleep 0.3; echo migrated\n");
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("api");
    let output = up.stop(Signal::SIGINT);
    let db_ready = line_of(&output, "> Ready! http://db-");
    assert!(
        db_ready < line_of(&output, "migrate.0 | migrating"),
        "{output}"
    );
    assert!(
        line_of(&output, "migrate.0 | [stack] exited 0: completed")
            < line_of(&output, "api.0 | listening"),
        "{output}"
    );
    assert!(
        line_of(&output, "[stack] api stopped") < line_of(&output, "[stack] db stopped"),
        "{output}"
    );
}

#[test]
fn a_service_waiting_for_its_dependency_shows_waiting_and_holds_up_no_other_service() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    for name in ["api", "db", "web"] {
        project.write(&format!("services/{name}/app.py"), SLOW_SERVICE);
        project.write(
            &format!("services/{name}/version.txt"),
            &format!("{name}\n"),
        );
    }
    // In start order `web` comes after `api`, which waits for `db` (healthy after 8 s: time
    // for every check below).
    project.write(
        "stack.toml",
        r#"[services.api]
run = "exec python3 app.py"
depends_on = { db = "healthy" }
stop_timeout = "2s"

[services.db]
run = "exec python3 app.py"
env = { HEALTHY_AFTER = "8" }
health = { http = "/healthz", interval = "200ms" }
stop_timeout = "2s"

[services.web]
run = "exec python3 app.py"
stop_timeout = "2s"
"#,
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");
    assert!(
        !up.output().contains("> Ready! http://db-"),
        "`web` waited for `db`, which it does not depend on:\n{}",
        up.output()
    );
    let api = project.live("api");
    assert_eq!(
        (&api["state"], &api["waiting_for"], &api["wanted"]),
        (&"WAITING".into(), &"db healthy".into(), &1.into()),
        "{api}"
    );
    let table = project.stack_ok(&["ls"]);
    let api_row = table
        .lines()
        .find(|line| line.trim_start().starts_with("api-"))
        .unwrap_or_else(|| panic!("no row of api:\n{table}"));
    assert!(
        api_row.contains("0/1") && api_row.contains("WAITING for db healthy"),
        "{table}"
    );
    // What needs it running is refused, saying why; a scale is kept for its start, and a
    // follow of its logs waits for it.
    let api_id = api["id"].as_str().unwrap().to_string();
    for args in [
        vec!["rm", api_id.as_str()],
        vec!["restart", "api"],
        vec!["exec", "api", "--", "true"],
    ] {
        let refused = project.stack(&args);
        assert_eq!(refused.code, 1, "{}", refused.all());
        assert!(
            refused
                .stderr
                .contains("has not started yet: it waits for db healthy"),
            "stack {args:?}: {}",
            refused.all()
        );
    }
    let scaled = project.stack_ok(&["scale", "api", "2"]);
    assert!(scaled.contains("will run 2 instances"), "{scaled}");
    // What it waits for cannot be stopped under it.
    let stopped = project.stack(&["scale", "db", "0"]);
    assert_eq!(stopped.code, 1, "{}", stopped.all());
    assert!(
        stopped
            .stderr
            .contains("`db` cannot stop now: `api` waits for it to start (db healthy)"),
        "{}",
        stopped.all()
    );
    // Its hosts say it is starting, and are its own: an alias may point at it, not take them.
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", "api.localhost")]);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("`api` is starting: it waits for db healthy"),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    project.stack_ok(&["alias", "app.localhost", "api"]);
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", "app.localhost")]);
    assert_eq!(reply.status, 503, "{}", reply.body);
    let taken = project.stack(&["alias", "api.localhost", "web"]);
    assert_eq!(taken.code, 1, "{}", taken.all());
    let mut follow = Up::spawn(&project, &["logs", "-f", "api"], &[]);
    up.wait_ready("api");
    follow.wait_for("api.1 | listening", COMMAND_DEADLINE);
    assert_eq!(instances_of(&project, "api"), Some(2));
    assert!(
        project
            .path()
            .join(".stack/deployments")
            .join(&api_id)
            .is_dir(),
        "the refused `stack rm` removed its files"
    );
    let api = project.live("api");
    assert_eq!(api["state"], "READY", "{api}");
    assert!(api.get("waiting_for").is_none(), "{api}");
    assert_serves(&up, "app.localhost", "api");
    let output = up.stop(Signal::SIGINT);
    assert!(
        line_of(&output, "> Ready! http://db-") < line_of(&output, "api.0 | listening"),
        "{output}"
    );
}

/// A worker that prints when it gets its stop signal and when it exits (`SLOW_EXIT` seconds
/// later), as seconds since the epoch.
const SIGNAL_STAMPS: &str = r#"import os, signal, sys, time
name = os.environ["NAME"]
def stop(sig, frame):
    print(f"{name} got {signal.Signals(sig).name} at {time.time():.3f}", flush=True)
    time.sleep(float(os.environ.get("SLOW_EXIT", "0")))
    print(f"{name} exits at {time.time():.3f}", flush=True)
    sys.exit(0)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
    signal.signal(sig, stop)
print(name, "up", flush=True)
while True:
    time.sleep(1)
"#;

/// The seconds on the line with `needle` (`a got SIGINT at 1796354841.280`).
fn stamp(output: &str, needle: &str) -> f64 {
    let line = &output.lines().nth(line_of(output, needle)).unwrap();
    line.rsplit(' ')
        .next()
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("no time at the end of `{line}`"))
}

#[test]
fn a_dependency_gets_its_stop_signal_only_after_its_dependents_exited() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/a/s.py", SIGNAL_STAMPS);
    project.write("services/b/s.py", SIGNAL_STAMPS);
    project.write(
        "stack.toml",
        r#"[services.a]
run = ["python3", "s.py"]
kind = "worker"
env = { NAME = "a" }
stop_signal = "SIGINT"

[services.b]
run = ["python3", "s.py"]
kind = "worker"
env = { NAME = "b", SLOW_EXIT = "1" }
stop_signal = "SIGUSR1"
depends_on = { a = "started" }
"#,
    );
    for how in ["Ctrl-C", "stack down"] {
        let mut up = Up::start(&project, &["--no-watch"]);
        up.wait_for("a.0 | a up", COMMAND_DEADLINE);
        up.wait_for("b.0 | b up", COMMAND_DEADLINE);
        let output = if how == "Ctrl-C" {
            up.stop(Signal::SIGINT)
        } else {
            project.stack(&["down"]);
            up.wait_exit(COMMAND_DEADLINE);
            up.output()
        };
        let b_exits = stamp(&output, "b exits at");
        let a_signalled = stamp(&output, "a got SIGINT at");
        assert!(
            stamp(&output, "b got SIGUSR1 at") + 0.9 <= b_exits,
            "{how}:\n{output}"
        );
        assert!(
            a_signalled >= b_exits,
            "{how}: `a` was signalled before `b`, which depends on it, exited:\n{output}"
        );
        assert!(output.contains("Stopped everything"), "{how}:\n{output}");
    }
}

#[test]
fn a_failing_one_shot_stops_the_start_with_its_exit_status_and_last_lines() {
    let project = ordered_project("echo cannot reach the schema; exit 3\n");
    let mut up = Up::launch(&project, &["--no-watch"], &[]);
    let status = up.wait_exit(COMMAND_DEADLINE);
    let output = up.output();
    assert_eq!(status.code(), Some(1), "{output}");
    let error = &output[line_of(&output, "Error!")..];
    assert!(
        error.contains("`api` waits for `migrate` to complete (exit 0)"),
        "{output}"
    );
    assert!(error.contains("exit status: 3"), "{output}");
    assert!(error.contains("cannot reach the schema"), "{output}");
    assert!(!output.contains("api.0 |"), "api must not start:\n{output}");
    assert!(
        error.contains("`api` was not started; stopping"),
        "{output}"
    );
    assert!(output.contains("Stopped everything"), "{output}");
}

#[test]
fn a_dependency_that_never_becomes_healthy_stops_the_start_with_one_error_naming_it() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    for name in ["api", "db", "worker"] {
        project.write(&format!("services/{name}/app.py"), SLOW_SERVICE);
    }
    project.write(
        "stack.toml",
        r#"[services.api]
run = "exec python3 app.py"
depends_on = { db = "healthy" }

[services.db]
run = "exec python3 app.py"
env = { HEALTHY_AFTER = "1000" }
health = { http = "/healthz", interval = "200ms" }

[services.worker]
run = "sleep 1000"
kind = "worker"
depends_on = { db = "healthy" }
"#,
    );
    let mut up = Up::launch(&project, &["--no-watch", "--ready-timeout", "2s"], &[]);
    let status = up.wait_exit(COMMAND_DEADLINE);
    let output = up.output();
    assert_eq!(status.code(), Some(1), "{output}");
    // One error, naming the dependency, its last check and everything that did not start.
    assert_eq!(output.matches("Error!").count(), 1, "{output}");
    let error = &output[line_of(&output, "Error!")..];
    assert!(
        error.contains("waits for `db` to become healthy, and it did not"),
        "{output}"
    );
    assert!(error.contains("its last health check:"), "{output}");
    assert!(
        error.contains("`api` and `worker` were not started; stopping"),
        "{output}"
    );
    assert!(!output.contains("keep running"), "{output}");
    assert!(
        !output.contains("api.0 |") && !output.contains("worker.0 |"),
        "{output}"
    );
    assert!(output.contains("Stopped everything"), "{output}");
}

#[test]
fn a_crashing_worker_restarts_with_backoff() {
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write(
        "services/queue/work.sh",
        "echo \"working PORT=${PORT:-none}\"; exit 1\n",
    );
    project.write(
        "stack.toml",
        "[services.queue]\nrun = \"sh work.sh\"\nkind = \"worker\"\nrestart = \"on-failure\"\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("restarting in 1s", COMMAND_DEADLINE);
    let first = Instant::now();
    up.wait_for("restarting in 2s", COMMAND_DEADLINE);
    assert!(
        first.elapsed() >= Duration::from_millis(900),
        "the second try came too soon"
    );
    let output = up.stop(Signal::SIGINT);
    assert!(
        output.contains("queue.0 | working PORT=none"),
        "a worker gets no PORT:\n{output}"
    );
    assert!(
        !output.contains("http://queue-"),
        "a worker has no URL:\n{output}"
    );
}

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
    )
}

/// The demo's Python service with the Rust writer, through the alias: log in on the writer,
/// increment, and read the count from Python (the same signed cookie, the same Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_service_reads_the_writers_login_through_the_alias() {
    support::require("python3");
    support::require("redis-server");
    let secret = "canary-python-secret-51c9e2";
    let project = Project::demo(secret);
    for file in ["app.py", "requirements.txt", ".gitignore"] {
        let text = std::fs::read_to_string(support::workspace().join("services/stats").join(file))
            .unwrap();
        project.write(&format!("services/stats/{file}"), &text);
    }
    let stack_toml = std::fs::read_to_string(support::workspace().join("stack.toml")).unwrap();
    project.write("stack.toml", &stack_toml);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let writer = support::workspace()
        .join("services/writer")
        .display()
        .to_string();
    let mut up = Up::start(&project, &[&writer, "stats", "--dotenv", "--no-watch"]);
    up.wait_ready("writer");
    up.wait_ready("stats");

    let host = "counter-demo.localhost";
    let browser = up.client(host);
    let (status, body) = get_json(&browser, &up.url(host, "/stats")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["login"], "/login");
    let (status, login) = get_json(&browser, &up.url(host, "/login")).await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        assert_eq!(get_json(&browser, &up.url(host, "/increment")).await.0, 200);
    }
    let (status, stats) = get_json(&browser, &up.url(host, "/stats")).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats,
        serde_json::json!({"user": login["user"], "count": 2})
    );
    // A cookie signed with another secret is no login.
    let forged = raw_http::request(
        up.port,
        "GET",
        "/stats",
        &[
            ("Host", host),
            (
                "Cookie",
                "connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0",
            ),
        ],
    );
    assert_eq!(forged.status, 403);
    let output = up.stop(Signal::SIGINT);
    assert!(!output.contains(secret), "the secret must never be printed");
}

#[test]
fn a_stack_toml_saved_while_up_runs_is_applied_to_what_changed_and_a_bad_one_changes_nothing() {
    let project = slow_project("0");
    let slow = "[services.slow]\nrun = [\"python3\", \"app.py\"]\nhealth = { http = \"/healthz\", interval = \"200ms\" }\nstop_timeout = \"2s\"\n";
    project.write("stack.toml", slow);
    let mut up = Up::start(&project, &[]);
    up.wait_ready("slow");
    up.wait_for("Watching for changes", COMMAND_DEADLINE);
    let first = project.live("slow")["id"].as_str().unwrap().to_string();

    // A bad file: its errors as `stack up` prints them at the start, and nothing changes.
    project.write(
        "stack.toml",
        "[services.slow]\nrun = 42\ninstances = \"two\"\n",
    );
    up.wait_for("Error! `stack.toml` has", COMMAND_DEADLINE);
    up.wait_for(
        "stack.toml:3:13: `instances` must be a positive whole number",
        COMMAND_DEADLINE,
    );
    up.wait_for("the stack keeps running", COMMAND_DEADLINE);
    assert!(
        up.output()
            .contains("stack.toml:2:7: `run` must be a command"),
        "{}",
        up.output()
    );
    assert_serves(&up, "slow.localhost", "one");
    // A new service whose program is not installed: said as the start says it, nothing applied.
    project.write("services/ghost/README", "none\n");
    project.write(
        "stack.toml",
        &format!("{slow}\n[services.ghost]\nrun = [\"stack-no-such-program\", \"serve\"]\n"),
    );
    up.wait_for(
        "`stack-no-such-program` (for `ghost`, stack.toml:7:7) not installed",
        COMMAND_DEADLINE,
    );
    up.wait_for("save `stack.toml` again", COMMAND_DEADLINE);
    // The same good file as at the start: nothing to do, nothing said, nothing built.
    project.write("stack.toml", slow);
    std::thread::sleep(Duration::from_millis(800));
    assert!(!up.output().contains("Building"), "{}", up.output());
    assert!(
        !up.output().contains("`stack.toml` changed"),
        "{}",
        up.output()
    );

    // A new `env` and `instances`: a new deployment with both, swapped in under load with no
    // failed request, each client seeing the old version, then the new one.
    let (failed, seen) = under_load(up.port, "slow.localhost", || {
        project.write(
            "stack.toml",
            &format!("{slow}env = {{ VERSION = \"two\" }}\ninstances = 2\n"),
        );
        up.wait_for(
            "`stack.toml` changed: a new deployment of `slow` (env)",
            COMMAND_DEADLINE,
        );
        up.wait_for_nth("> Ready! http://slow-", 2, COMMAND_DEADLINE);
    });
    assert_eq!(failed, 0, "{}", up.output());
    for versions in seen {
        assert_eq!(versions, ["one", "two"], "{}", up.output());
    }
    let second = project.live("slow")["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert_eq!(instances_of(&project, "slow"), Some(2));

    // `instances` alone scales the live deployment; a new service starts once what it
    // depends on is healthy; neither makes a new deployment of `slow`.
    project.write("services/extra/app.py", SLOW_SERVICE);
    project.write("services/extra/version.txt", "extra\n");
    project.write("services/seed/README", "a one-shot\n");
    project.write(
        "stack.toml",
        &format!("{slow}env = {{ VERSION = \"two\" }}\ninstances = 3\n\n[services.extra]\nrun = [\"python3\", \"app.py\"]\ndepends_on = {{ slow = \"healthy\", seed = \"completed\" }}\n\n[services.seed]\nrun = \"echo seeded\"\nkind = \"worker\"\n"),
    );
    up.wait_for(
        "`stack.toml` changed: `slow` scales to 3; `seed` starts; `extra` starts",
        COMMAND_DEADLINE,
    );
    // A one-shot that the new service waits for runs first, said done when it exited 0; it
    // has no URL.
    up.wait_for("> Success! seed-", COMMAND_DEADLINE);
    assert!(
        up.output().contains("(one-shot `seed`) ran and exited 0"),
        "{}",
        up.output()
    );
    assert!(!up.output().contains("> Ready! seed-"), "{}", up.output());
    assert!(!up.output().contains("http://seed-"), "{}", up.output());
    up.wait_for("> Ready! http://extra-", COMMAND_DEADLINE);
    assert!(
        line_of(&up.output(), "seed.0 | seeded") < line_of(&up.output(), "extra.0 | listening"),
        "{}",
        up.output()
    );
    assert_serves(&up, "extra.localhost", "extra");
    assert_eq!(project.live("slow")["id"], second.as_str());
    let deadline = Instant::now() + COMMAND_DEADLINE;
    while instances_of(&project, "slow") != Some(3) {
        assert!(Instant::now() < deadline, "{}", project.live("slow"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // A save of the new service's code redeploys it: it is watched now.
    project.write("services/extra/version.txt", "extra two\n");
    up.wait_for_nth("> Ready! http://extra-", 2, COMMAND_DEADLINE);
    assert_serves(&up, "extra.localhost", "extra two");

    // Out of the file, they stop (dependents first); `slow` keeps serving, now with an
    // `env_file`, which is watched from then on.
    project.write("services/slow/slow.env", "VERSION=three\n");
    project.write(
        "stack.toml",
        &format!("{slow}env_file = \"slow.env\"\ninstances = 3\n"),
    );
    up.wait_for("Stopped `seed`", COMMAND_DEADLINE);
    assert!(
        line_of(&up.output(), "Stopped `extra`") < line_of(&up.output(), "Stopped `seed`"),
        "{}",
        up.output()
    );
    up.wait_for(
        "a new deployment of `slow` (env); `seed` stops (no longer declared); `extra` stops (no longer declared)",
        COMMAND_DEADLINE,
    );
    let reply = raw_http::request(up.port, "GET", "/", &[("Host", "extra.localhost")]);
    assert_ne!(reply.status, 200, "{}", reply.body);
    up.wait_for_nth("> Ready! http://slow-", 3, COMMAND_DEADLINE);
    assert_serves(&up, "slow.localhost", "three");
    project.write("services/slow/slow.env", "VERSION=four\n");
    up.wait_for(
        "`services/slow/slow.env` changed: a new deployment of `slow` (env)",
        COMMAND_DEADLINE,
    );
    up.wait_for_nth("> Ready! http://slow-", 4, COMMAND_DEADLINE);
    assert_serves(&up, "slow.localhost", "four");
    assert_eq!(instances_of(&project, "slow"), Some(3));
    assert_eq!(up.count("Building slow"), 3, "{}", up.output());
    let output = up.stop(Signal::SIGINT);
    assert!(
        !output.contains("healthy=False"),
        "a request reached an unhealthy instance:\n{output}"
    );
}

#[test]
fn a_service_at_the_project_root_runs_and_redeploys_without_the_projects_state() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("app.py", SLOW_SERVICE);
    project.write("version.txt", "root\n");
    project.write(
        "stack.toml",
        "[services.web]\npath = \".\"\nrun = [\"python3\", \"app.py\"]\n",
    );
    let mut up = Up::start(&project, &[]);
    up.wait_ready("web");
    up.wait_for("Watching for changes", COMMAND_DEADLINE);
    assert_serves(&up, "web.localhost", "root");
    // The deployment is a copy of the project without `.stack/` (its deployments, logs and
    // secrets): a copy of that would copy itself.
    let deployment = |project: &Project| {
        let id = project.live("web")["id"].as_str().unwrap().to_string();
        project.path().join(".stack/deployments").join(id)
    };
    let first = deployment(&project);
    assert!(first.join("app.py").is_file());
    assert!(!first.join(".stack").exists(), "{}", first.display());
    project.write("version.txt", "root two\n");
    up.wait_for_nth("> Ready! http://web-", 2, COMMAND_DEADLINE);
    assert_serves(&up, "web.localhost", "root two");
    let second = deployment(&project);
    assert_ne!(first, second);
    assert!(!second.join(".stack").exists(), "{}", second.display());
    up.stop(Signal::SIGINT);
}

#[test]
fn a_procfile_runs_as_foreman_runs_it_with_release_first_and_stack_toml_settings() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("app.py", SLOW_SERVICE);
    project.write("version.txt", "procfile\n");
    // A bad line: refused as stack.toml is, file:line:column, nothing started.
    project.write("Procfile", "web: python3 app.py\nclock sh -c 'sleep 1'\n");
    let refused = project.stack(&["up", "--port", "0", "--no-watch"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("Procfile:2:1: a line is `name: command`"),
        "{}",
        refused.all()
    );
    assert!(!project.path().join(".stack/deployments").exists());

    project.write(
        "Procfile",
        "# as on Heroku\nweb: python3 app.py\nclock: sh -c 'while true; do echo tick; sleep 1; done'\nrelease: echo migrated > migrated.txt\n",
    );
    // stack.toml gives an entry settings by naming it, as it does a detected service.
    project.write(
        "stack.toml",
        "[services.web]\nhealth = { http = \"/healthz\", interval = \"200ms\" }\n",
    );
    let json = project.stack_ok(&["config", "--json"]);
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    let web = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|service| service["name"] == "web")
        .unwrap();
    assert_eq!(web["builder"]["from"], "Procfile:2", "{web}");
    assert_eq!(web["health"]["from"], "stack.toml:2", "{web}");
    assert_eq!(web["kind"]["value"], "web", "{web}");

    let mut up = Up::start(&project, &[]);
    up.wait_ready("web");
    up.wait_for("clock.0 | tick", COMMAND_DEADLINE);
    let output = up.output();
    // `release` ran to completion before the others started; `clock` is a worker.
    assert!(
        line_of(&output, "[stack] exited 0: completed") < line_of(&output, "> Ready! http://web-"),
        "{output}"
    );
    assert!(output.contains("(worker `clock`)"), "{output}");
    assert_serves(&up, "web.localhost", "procfile");
    assert_eq!(project.live("release")["state"], "COMPLETED");

    // A save of the Procfile is applied as a save of stack.toml is.
    project.write("Procfile", "web: python3 app.py\n");
    up.wait_for(
        "`Procfile` changed: `release` stops (no longer declared); `clock` stops (no longer declared)",
        COMMAND_DEADLINE,
    );
    up.wait_for("Stopped `release`", COMMAND_DEADLINE);
    assert_serves(&up, "web.localhost", "procfile");
    up.stop(Signal::SIGINT);
}

#[test]
fn a_save_while_the_first_deployments_wait_for_their_dependencies_is_deployed_after_them() {
    let project = ordered_project("echo migrated\n");
    let stack_toml = std::fs::read_to_string(project.path().join("stack.toml")).unwrap();
    project.write(
        "stack.toml",
        &stack_toml.replace("HEALTHY_AFTER = \"1\"", "HEALTHY_AFTER = \"3\""),
    );
    let mut up = Up::start(&project, &[]);
    up.wait_for("Watching for changes", COMMAND_DEADLINE);
    // `api` waits for `db`, healthy after 3 s; a save of `api` meanwhile waits for its start.
    project.write("services/api/version.txt", "api two\n");
    // The redeploy's line (the first deployment may be retired before it says `Ready!`).
    up.wait_for_parts(&["> Ready! http://api-", "[build "], 1, COMMAND_DEADLINE);
    assert_serves(&up, "api.localhost", "api two");
    let output = up.output();
    assert!(
        line_of(&output, "> Ready! http://db-") < line_of(&output, "Building api"),
        "{output}"
    );
    up.stop(Signal::SIGINT);
}

/// A server that listens on `[::1]` only, as one that binds `localhost` does where that
/// resolves to `::1` first (Node 17+, Vite).
const IPV6_ONLY_SERVICE: &str = r#"import http.server, os, socket

class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"over ::1"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

Server(("::1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn a_service_that_listens_on_ipv6_loopback_only_is_ready_checked_and_routed() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/plain/app.py", IPV6_ONLY_SERVICE);
    project.write("services/checked/app.py", IPV6_ONLY_SERVICE);
    project.write(
        "stack.toml",
        "[services.plain]\nrun = [\"python3\", \"app.py\"]\n\n[services.checked]\nrun = [\"python3\", \"app.py\"]\nhealth = { http = \"/healthz\", interval = \"200ms\" }\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("plain");
    up.wait_ready("checked");
    for host in ["plain.localhost", "checked.localhost"] {
        assert_serves(&up, host, "over ::1");
    }
    // The health check keeps passing there: no restart.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(project.live("checked")["state"], "READY");
    assert!(!up.output().contains("restarting"), "{}", up.output());
    up.stop(Signal::SIGINT);
}

/// Secrets from every source are masked alike: a service's own `env` and `env_file`, the
/// `.env`, `-e`; by name (`*_PASSWORD`, `API_KEY`) and inside any URL (`DATABASE_URL`), in
/// the terminal, the log files and the dashboard's environment.
#[test]
fn a_services_own_secrets_are_masked_like_the_stacks() {
    let project = Project::empty().with_env("SESSION_SECRET", "canary-session-7f3a");
    project.write("services/leak/own.env", "FILE_TOKEN=canary-file-token-19\n");
    project.write(
        ".env",
        "API_KEY=canary-api-key-2b\nDATABASE_URL=postgres://app:canary-db-pass-8c@db/app\n",
    );
    project.write(
        "stack.toml",
        "[services.leak]\nkind = \"worker\"\nenv_file = \"own.env\"\nenv = { DB_PASSWORD = \"canary-toml-pass-44\" }\nrun = \"echo toml=$DB_PASSWORD file=$FILE_TOKEN api=$API_KEY db=$DATABASE_URL cli=$CLI_SECRET; exec sleep 600\"\n",
    );
    let mut up = Up::start(
        &project,
        &[
            "--dotenv",
            "-e",
            "CLI_SECRET=canary-cli-secret-6d",
            "--no-watch",
        ],
    );
    let line = up.wait_for("leak.0 | toml=", COMMAND_DEADLINE);
    assert!(
        line.contains("toml=*** file=*** api=*** db=postgres://app:***@db/app cli=***"),
        "{line}"
    );
    let env = raw_http::request(up.port, "GET", "/api/env", &[("Host", "stack.localhost")]);
    assert_eq!(env.status, 200, "{}", env.body);
    let output = up.stop(Signal::SIGINT);
    for (what, text) in [
        ("stack up's output", output),
        ("the log files", project.all_logs()),
        ("the dashboard's environment", env.body),
    ] {
        assert!(!text.contains("canary-"), "a secret in {what}:\n{text}");
    }
}

/// A descendant that leaves the process group (`setsid`, a daemonising server) still goes with
/// its instance: at `stack down`, and, after `stack up` was killed with SIGKILL, at the next
/// `stack up`.
#[test]
fn a_process_that_left_its_group_is_stopped_with_its_instance() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/index.html", "hi");
    project.write(
        "stack.toml",
        "[services.web]\nrun = \"setsid sleep 1777 & echo $! > ../escaped.pid; exec python3 -m http.server $PORT --bind 127.0.0.1\"\n",
    );
    let escaped = |project: &Project| -> u64 {
        let deployments = project.path().join(".stack/deployments");
        let mut pid = None;
        support::wait_until("the escaped pid file", COMMAND_DEADLINE, || {
            pid = std::fs::read_to_string(deployments.join("escaped.pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok());
            pid.is_some()
        });
        let _ = std::fs::remove_file(deployments.join("escaped.pid"));
        pid.unwrap()
    };
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");
    let first = escaped(&project);
    assert!(support::alive(first));
    project.stack_ok(&["down"]);
    up.wait_exit(COMMAND_DEADLINE);
    support::wait_until("the escaped process to go", COMMAND_DEADLINE, || {
        !support::alive(first)
    });

    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");
    let second = escaped(&project);
    nix::sys::signal::kill(up.pid(), Signal::SIGKILL).unwrap();
    up.wait_exit(COMMAND_DEADLINE);
    assert!(
        support::alive(second),
        "only the group goes with a killed stack up"
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("left running by an earlier `stack up`", COMMAND_DEADLINE);
    support::wait_until("the escaped process to go", COMMAND_DEADLINE, || {
        !support::alive(second)
    });
    up.wait_ready("web");
    up.stop(Signal::SIGINT);
}

#[test]
fn a_run_changed_while_nothing_runs_makes_a_new_deployment_at_the_next_up() {
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/job/keep.txt", "unchanged\n");
    let worker = |word: &str| {
        format!("[services.job]\nrun = \"echo {word}; exec sleep 1000\"\nkind = \"worker\"\n")
    };
    project.write("stack.toml", &worker("first-run"));
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("job.0 | first-run", COMMAND_DEADLINE);
    up.stop(Signal::SIGINT);
    let first = project.live("job")["id"].as_str().unwrap().to_string();

    // The same file and tree again: the deployment is reused.
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("job.0 | first-run", COMMAND_DEADLINE);
    up.stop(Signal::SIGINT);
    assert_eq!(project.live("job")["id"], first.as_str());

    project.write("stack.toml", &worker("second-run"));
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("job.0 | second-run", COMMAND_DEADLINE);
    let output = up.stop(Signal::SIGINT);
    assert!(!output.contains("first-run"), "{output}");
    assert_ne!(project.live("job")["id"], first.as_str(), "{output}");
}

#[test]
fn redirections_and_builtins_are_not_programs_and_a_missing_one_is_named_where_written() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/README", "api\n");
    project.write(
        "stack.toml",
        "[services.api]\nrun = '''test -n \"$PORT\" || exit 1; \\\nexec python3 -m http.server $PORT --bind 127.0.0.1 2>&1'''\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("api");
    up.stop(Signal::SIGINT);

    project.write(
        "stack.toml",
        "[services.api]\nbuild = \"true\"\nrun = \"stack-no-such-program serve 2>&1\"\n",
    );
    let refused = project.stack(&["up", "--port", "0", "--no-watch"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains(
            "Error! `stack-no-such-program` (for `api`, stack.toml:3:7) not installed (not found on PATH)"
        ),
        "{}",
        refused.all()
    );
}

#[test]
fn config_refuses_an_env_file_that_up_refuses() {
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/app.sh", "exit 0\n");
    project.write("services/api/api.env", "GOOD=1\nBAD LINE here=x\n");
    project.write(
        "stack.toml",
        "[services.api]\nrun = \"sh app.sh\"\nkind = \"worker\"\nenv_file = \"api.env\"\n",
    );
    let config = project.stack(&["config"]);
    assert_eq!(config.code, 1, "{}", config.all());
    let up = project.stack(&["up", "--port", "0", "--no-watch"]);
    assert_eq!(up.code, 1, "{}", up.all());
    let first_line = |stderr: &str| stderr.lines().next().unwrap_or_default().to_string();
    assert!(
        first_line(&config.stderr).starts_with("Error! `api`'s `env_file`: "),
        "{}",
        config.all()
    );
    assert!(config.stderr.contains("api.env:2:"), "{}", config.all());
    assert_eq!(first_line(&config.stderr), first_line(&up.stderr));
    assert!(!config.stderr.contains("here=x"), "values are never shown");
}

/// Answers `/healthz` 503 for its first 1.5 s, then 200, printing each check it gets.
const COUNTED_HEALTH: &str = r#"import http.server, os, time
START = time.time()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        healthy = time.time() - START >= 1.5
        print(f"check healthy={healthy}", flush=True)
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn before_it_is_ready_an_http_check_runs_at_most_once_per_interval() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/app.py", COUNTED_HEALTH);
    project.write(
        "stack.toml",
        "[services.api]\nrun = [\"python3\", \"app.py\"]\nhealth = { http = \"/healthz\", interval = \"300ms\" }\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("api");
    let output = up.stop(Signal::SIGINT);
    let failed = output.matches("check healthy=False").count();
    // 1.5 s at one check per 300 ms: about 5 (at 15 ms, about 100).
    assert!((1..=8).contains(&failed), "{failed} checks:\n{output}");
}

/// A closed terminal (SIGHUP) stops the stack in order, as SIGTERM does; after a SIGKILL,
/// `stack down` removes the socket nobody answers on; a scale recorded offline is checked
/// (no empty name) and held to `--max-instances` at the start.
#[test]
fn hangup_stops_in_order_down_cleans_a_stale_socket_and_a_recorded_scale_is_capped() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    project.write(
        "stack.toml",
        "[services.web]\nrun = [\"python3\", \"app.py\"]\nenv = { LOG_REQUESTS = \"0\" }\n",
    );
    project
        .stack(&["scale", "", "2"])
        .assert_refused(&["Error! `` is not a service or deployment name"]);
    let recorded = project.stack_ok(&["scale", "web", "3"]);
    assert!(
        recorded.contains("applies at the next `stack up`"),
        "{recorded}"
    );

    let mut up = Up::start(&project, &["--no-watch", "--max-instances", "2"]);
    up.wait_for(
        "`web` was to run 3 instances, more than `--max-instances 2`: it runs 2",
        COMMAND_DEADLINE,
    );
    up.wait_ready("web");
    assert_eq!(project.live("web")["ready"], 2, "{}", up.output());
    let output = up.stop(Signal::SIGHUP);
    assert!(output.contains("> Stopping"), "{output}");
    assert!(output.contains("Stopped everything"), "{output}");
    let socket = project.path().join(".stack/stack.sock");
    assert!(!socket.exists());

    let mut up = Up::start(&project, &["--no-watch", "--max-instances", "2"]);
    up.wait_ready("web");
    nix::sys::signal::kill(up.pid(), Signal::SIGKILL).unwrap();
    up.wait_exit(COMMAND_DEADLINE);
    assert!(socket.exists(), "a killed stack up leaves its socket");
    let down = project.stack_ok(&["down"]);
    assert!(
        down.contains("removed the control socket") || down.contains("Stopped"),
        "{down}"
    );
    assert!(!socket.exists(), "{down}");
    let doctor = project.stack(&["doctor"]);
    assert!(
        !doctor.all().contains("control socket: `"),
        "{}",
        doctor.all()
    );
}

#[test]
fn a_worker_is_ready_when_its_check_passes_and_a_one_shot_is_said_done_when_it_exited_0() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/version.txt", "api\n");
    project.write("services/api/app.py", SLOW_SERVICE);
    project.write("services/db/.keep", "");
    project.write("services/migrate/.keep", "");
    project.write(
        "stack.toml",
        r#"[services.api]
run = "python3 app.py"
depends_on = { migrate = "completed" }

[services.db]
run = "sleep 1000"
kind = "worker"
health = { cmd = "test -f up" }

[services.migrate]
run = "echo migrating; sleep 4; echo migrated"
kind = "worker"
"#,
    );
    // A 2 s ready timeout: the one-shot runs longer than that, and `completed` still waits.
    let mut up = Up::start(&project, &["--no-watch", "--ready-timeout", "2s"]);
    let error = up.wait_for("Error! db:", COMMAND_DEADLINE);
    assert!(
        error.contains("is not ready after 2s (`--ready-timeout`)"),
        "{error}"
    );
    up.wait_for("still waits for `migrate` to complete", COMMAND_DEADLINE);
    let done = up.wait_for("(one-shot `migrate`) ran and exited 0", COMMAND_DEADLINE);
    assert!(done.starts_with("> Success! migrate-"), "{done}");
    up.wait_ready("api");
    let output = up.output();
    assert!(
        line_of(&output, "migrate.0 | migrated") < line_of(&output, "(one-shot `migrate`)"),
        "{output}"
    );
    assert!(!output.contains("> Ready! db-"), "{output}");
    assert!(!output.contains("> Ready! migrate-"), "{output}");
    let migrate = project.live("migrate");
    assert_eq!(migrate["state"], "COMPLETED", "{migrate}");
    assert_eq!(migrate["instances"][0]["state"], "COMPLETED", "{migrate}");
    // A scale-up of a one-shot is done once its new run exited 0, and so is a restart.
    let started = Instant::now();
    let scaled = project.stack(&["scale", "migrate", "2"]);
    assert_eq!(scaled.code, 0, "{}", scaled.all());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{}",
        scaled.all()
    );
    // Printed before it answered (the reader of the output may lag a little; the run takes 4 s).
    up.wait_for("migrate.1 | migrated", Duration::from_secs(2));
    let restarted = project.stack(&["restart", "migrate.0"]);
    assert_eq!(restarted.code, 0, "{}", restarted.all());
    up.wait_for_parts(&["migrate.0 | migrated"], 2, Duration::from_secs(2));
    let output = up.stop(Signal::SIGINT);
    assert!(output.contains("Stopped everything"), "{output}");
    let stopped = project.stack(&["ls"]).all();
    let db_row = stopped
        .lines()
        .find(|line| line.contains("db-"))
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(db_row.contains("(worker)"), "{stopped}");
    assert!(!db_row.contains("http"), "{stopped}");
}

#[test]
fn a_saved_one_shot_runs_again_and_is_said_done_or_failed_not_ready() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/version.txt", "api\n");
    project.write("services/api/app.py", SLOW_SERVICE);
    project.write(
        "services/migrate/run.sh",
        "echo migrating one; echo migrated one\n",
    );
    project.write(
        "stack.toml",
        r#"[services.api]
run = "exec python3 app.py"
depends_on = { migrate = "completed" }
stop_timeout = "2s"

[services.migrate]
run = "sh run.sh"
kind = "worker"
"#,
    );
    let mut up = Up::start(&project, &[]);
    up.wait_ready("api");
    up.wait_for("Watching for changes", COMMAND_DEADLINE);
    // Still running a second after the swap took it: said done only once it exited 0.
    project.write(
        "services/migrate/run.sh",
        "echo migrating two; sleep 1; echo migrated two\n",
    );
    let done = up.wait_for_parts(
        &["(one-shot `migrate`) ran and exited 0 [build "],
        1,
        COMMAND_DEADLINE,
    );
    assert!(done.starts_with("> Success! migrate-"), "{done}");
    let output = up.output();
    assert!(
        line_of(&output, "migrate.0 | migrated two") < line_of(&output, "ran and exited 0 [build "),
        "{output}"
    );
    assert!(!output.contains("> Ready! migrate-"), "{output}");
    assert_eq!(project.live("migrate")["state"], "COMPLETED");
    // One save that changes both: the new `api` goes live only once its migration ran.
    project.write(
        "stack.toml",
        r#"[services.api]
run = "exec python3 app.py"
env = { VERSION = "api four" }
depends_on = { migrate = "completed" }
stop_timeout = "2s"

[services.migrate]
run = "echo migrating four; sleep 1; echo migrated four"
kind = "worker"
"#,
    );
    up.wait_for_parts(&["> Ready! http://api-", "[build "], 1, COMMAND_DEADLINE);
    assert_serves(&up, "api.localhost", "api four");
    let output = up.output();
    let lines: Vec<&str> = output.lines().collect();
    let new_api_started = lines
        .iter()
        .rposition(|line| line.contains("api.0 | listening on"))
        .unwrap();
    assert!(
        line_of(&output, "migrate.0 | migrated four") < new_api_started,
        "{output}"
    );
    project.write(
        "stack.toml",
        r#"[services.api]
run = "exec python3 app.py"
depends_on = { migrate = "completed" }
stop_timeout = "2s"

[services.migrate]
run = "sh run.sh"
kind = "worker"
"#,
    );
    up.wait_for_parts(&["> Ready! http://api-", "[build "], 2, COMMAND_DEADLINE);
    // One replaced by a save while it runs is said to be cut short.
    project.write(
        "services/migrate/run.sh",
        "echo migrating five; sleep 30; echo migrated five\n",
    );
    up.wait_for("migrate.0 | migrating five", COMMAND_DEADLINE);
    project.write("services/migrate/run.sh", "echo migrating six\n");
    up.wait_for(
        "migrate.0 | [stack] migrate.0 stopped before it exited",
        COMMAND_DEADLINE,
    );
    up.wait_for_parts(
        &["(one-shot `migrate`) ran and exited 0 [build "],
        3,
        COMMAND_DEADLINE,
    );
    assert!(!up.output().contains("migrated five"), "{}", up.output());
    // One that fails after it started is an error naming it; the other services keep running.
    project.write(
        "services/migrate/run.sh",
        "echo migrating three; sleep 1; exit 3\n",
    );
    let failed = up.wait_for(
        "migrate: the new deployment did not complete",
        COMMAND_DEADLINE,
    );
    assert!(failed.contains("Error!"), "{failed}");
    assert_serves(&up, "api.localhost", "api");
    // One that fails at once is said the same way, and its log can be read by its id.
    project.write("services/migrate/run.sh", "echo failing fast; exit 5\n");
    let failed = up.wait_for_parts(
        &[
            "migrate: the new deployment did not complete",
            "exit status: 5",
        ],
        1,
        COMMAND_DEADLINE,
    );
    let id = failed
        .split('`')
        .nth(1)
        .expect("the deployment in backticks");
    assert!(id.starts_with("migrate-"), "{failed}");
    let logs = project.stack_ok(&["logs", id]);
    assert!(logs.contains("failing fast"), "{logs}");
    assert_serves(&up, "api.localhost", "api");
    // Nor a route: an alias to it is refused, saying why.
    let refused = project.stack(&["alias", "jobs.localhost", "migrate"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("`migrate` is a worker: it has no port"),
        "{}",
        refused.all()
    );
    // A rollback to the last good run's deployment runs it again, and is done once it exited
    // 0; a one-shot has no URL to show.
    let output = up.output();
    let good = output
        .lines()
        .skip(line_of(&output, "migrate.0 | migrating six"))
        .find(|line| line.contains("(one-shot `migrate`) ran and exited 0"))
        .and_then(|line| line.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no success of the sixth run:\n{output}"))
        .to_string();
    assert!(good.starts_with("migrate-"), "{good}");
    let rolled = project.stack_ok(&["rollback", "migrate", &good]);
    assert!(rolled.contains("migrate now serves migrate-"), "{rolled}");
    assert!(!rolled.contains("http"), "{rolled}");
    up.wait_for_parts(&["migrate.0 | migrating six"], 2, Duration::from_secs(2));
    assert_eq!(project.live("migrate")["state"], "COMPLETED");
    let output = up.stop(Signal::SIGINT);
    assert!(!output.contains("> Ready! migrate-"), "{output}");
    assert!(!output.contains("did not start"), "{output}");
    // Read from disk when nothing runs, too.
    let logs = project.stack_ok(&["logs", id]);
    assert!(logs.contains("failing fast"), "{logs}");
}

#[test]
fn a_one_shots_restart_and_scale_answer_once_its_runs_ended_and_say_why_one_failed() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/api/app.py", SLOW_SERVICE);
    project.write("services/api/version.txt", "api\n");
    let code = project.path().join("exit-code");
    std::fs::write(&code, "0").unwrap();
    project.write(
        "services/migrate/run.sh",
        "code=$(cat \"$CODE_FILE\"); echo \"run to $code\"; sleep 1; exit \"$code\"\n",
    );
    project.write(
        "stack.toml",
        &format!(
            "[services.api]\nrun = \"exec python3 app.py\"\ndepends_on = {{ migrate = \"completed\" }}\n\n[services.migrate]\nrun = \"sh run.sh\"\nkind = \"worker\"\nenv = {{ CODE_FILE = \"{}\" }}\n",
            code.display()
        ),
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("api");
    let timed = |args: &[&str]| {
        let started = Instant::now();
        let run = project.stack(args);
        (run, started.elapsed())
    };
    // A run that fails is the command's error, with its exit status; it never hangs.
    std::fs::write(&code, "3").unwrap();
    let (failed, took) = timed(&["restart", "migrate"]);
    assert_eq!(failed.code, 1, "{}", failed.all());
    assert!(failed.stderr.contains("exit status: 3"), "{}", failed.all());
    assert!(
        took >= Duration::from_millis(900),
        "answered before the run ended: {took:?}"
    );
    // Run again from CRASHED, to exit 0: done once it did.
    std::fs::write(&code, "0").unwrap();
    let (restarted, took) = timed(&["restart", "migrate"]);
    assert_eq!(restarted.code, 0, "{}", restarted.all());
    assert!(
        took >= Duration::from_millis(900),
        "answered before the run ended: {took:?}"
    );
    assert_eq!(project.live("migrate")["state"], "COMPLETED");
    // A scale whose new run fails says so too.
    std::fs::write(&code, "4").unwrap();
    let (scaled, _) = timed(&["scale", "migrate", "2"]);
    assert_eq!(scaled.code, 1, "{}", scaled.all());
    assert!(scaled.stderr.contains("exit status: 4"), "{}", scaled.all());
    up.stop(Signal::SIGINT);
}

/// Ctrl-C while a service is still starting stops everything and says nothing went wrong
/// with the service (its deployment going away is the stop, not a failure).
#[test]
fn ctrl_c_while_a_service_starts_is_no_error() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    project.write(
        "stack.toml",
        "[services.web]\nrun = [\"python3\", \"app.py\"]\nenv = { HEALTHY_AFTER = \"20\", LOG_REQUESTS = \"0\" }\nhealth = { http = \"/healthz\", interval = \"200ms\" }\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("web.0 | listening on", COMMAND_DEADLINE);
    let output = up.stop(Signal::SIGINT);
    assert!(output.contains("Stopped everything"), "{output}");
    assert!(!output.contains("Error!"), "{output}");
}

/// `stack down` during a `stack scale` that waits for new instances: the scale says the stop
/// cut it short, not that its deployment is unknown.
#[test]
fn a_scale_cut_short_by_down_says_so() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    // Ready at once the first time; the instances the scale adds wait for the marker.
    project.write(
        "stack.toml",
        "[services.web]\nrun = \"if [ -f ../started ]; then export HEALTHY_AFTER=30; fi; touch ../started; exec python3 app.py\"\nenv = { LOG_REQUESTS = \"0\" }\nhealth = { http = \"/healthz\", interval = \"200ms\" }\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");
    std::thread::scope(|scope| {
        let scale = scope.spawn(|| project.stack(&["scale", "web", "2"]));
        up.wait_for("web.1 | listening on", COMMAND_DEADLINE);
        project.stack_ok(&["down"]);
        scale.join().unwrap().assert_refused(&[
            "Error! `stack up` is stopping, so the scale did not finish",
            "run `stack up` again",
        ]);
    });
    up.wait_exit(COMMAND_DEADLINE);
}

/// A declared service is named by its path as by its name (`stack up ./services/web`).
#[test]
fn a_declared_service_is_named_by_its_path_too() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    project.write("services/api/app.py", SLOW_SERVICE);
    project.write(
        "stack.toml",
        "[services.web]\nrun = [\"python3\", \"app.py\"]\n\n[services.api]\nrun = [\"python3\", \"app.py\"]\n",
    );
    let mut up = Up::start(&project, &["./services/web", "--no-watch"]);
    up.wait_ready("web");
    let listed = project.stack_ok(&["ls"]);
    assert!(
        !listed.contains("api-"),
        "only web was asked for:\n{listed}"
    );
    up.stop(Signal::SIGINT);
}

/// A program on a port of its own (it ignores `PORT`) can redeploy: the live deployment stops
/// first, said in its log, and the new one takes the port.
#[test]
fn a_save_redeploys_a_program_that_listens_on_a_port_of_its_own() {
    support::require("python3");
    let port = support::free_port();
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/fixed/index.html", "one");
    project.write(
        "stack.toml",
        &format!(
            "[services.fixed]\nrun = \"exec python3 -m http.server {port} --bind 127.0.0.1\"\n"
        ),
    );
    let mut up = Up::start(&project, &[]);
    up.wait_ready("fixed");
    up.wait_for("Watching for changes", COMMAND_DEADLINE);
    let first = project.live("fixed")["id"].as_str().unwrap().to_string();
    let proxy = up.port;
    let get = || raw_http::request(proxy, "GET", "/", &[("Host", "fixed.localhost")]);
    assert_eq!(get().body, "one");

    project.write("services/fixed/index.html", "two");
    up.wait_for(
        &format!("[stack] it listens on port {port} of its own, which the new deployment needs: stopping it first"),
        COMMAND_DEADLINE,
    );
    support::wait_until("the new deployment to serve", COMMAND_DEADLINE, || {
        get().body == "two"
    });
    let second = project.live("fixed")["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    assert!(!up.output().contains("Error!"), "{}", up.output());
    up.stop(Signal::SIGINT);
}

/// A program that outlives its stop signal's grace is killed, and the stop says so.
#[test]
fn a_program_killed_after_its_stop_timeout_is_named() {
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write(
        "services/stubborn/run.sh",
        "trap '' TERM\necho up\nwhile true; do sleep 0.1; done\n",
    );
    project.write(
        "stack.toml",
        "[services.stubborn]\nrun = [\"sh\", \"run.sh\"]\nkind = \"worker\"\nstop_timeout = \"500ms\"\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("stubborn.0 | up", COMMAND_DEADLINE);
    let output = up.stop(Signal::SIGINT);
    assert!(
        output.contains("was still running 0.5s after SIGTERM: killed (SIGKILL)"),
        "{output}"
    );
}

/// A string `run` goes through `sh -c`, which exits on the stop signal at once (dash does
/// not exec its last command): the program it started still gets its grace to stop cleanly.
#[test]
fn a_program_behind_a_shell_gets_its_grace_to_stop() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write(
        "services/graceful/app.py",
        "import signal, sys, time\ndef stop(*_):\n    time.sleep(0.3)\n    print('finished cleanly', flush=True)\n    sys.exit(0)\nsignal.signal(signal.SIGTERM, stop)\nprint('working', flush=True)\nwhile True:\n    time.sleep(0.1)\n",
    );
    project.write(
        "stack.toml",
        "[services.graceful]\nrun = \"python3 app.py\"\nkind = \"worker\"\nstop_timeout = \"5s\"\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("graceful.0 | working", COMMAND_DEADLINE);
    let output = up.stop(Signal::SIGINT);
    assert!(output.contains("graceful.0 | finished cleanly"), "{output}");
    assert!(!output.contains("killed (SIGKILL)"), "{output}");
}
