//! `stack up` end to end: the real `stack` binary, real services (the workspace's writer and
//! reader, and tiny Node services under `tests/fixtures/node-pair`), a real redis-server, real
//! sockets, `--port 0` everywhere. Every wait is deadline-bounded polling.
//!
//! The demo's services are named by path (`stack up <workspace>/services/writer ...`), so cargo
//! builds them in this workspace and its target dir: nothing is rebuilt per test.

use std::fs;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use stack::control::{apply_alias_change, AliasChange, Applied};
use stack::state::aliases::{Alias, AliasTarget};

mod support;
use support::{alive, listening, require, wait_until, workspace, Project, Up};

const DEADLINE: Duration = Duration::from_secs(30);

/// The tools these tests run for real; a missing one fails with how to install it.
fn require_tools() {
    for tool in ["redis-server", "node", "npm"] {
        require(tool);
    }
}

/// Pids and ports of every instance in `stack ls --json`.
fn instances(deployments: &[Value]) -> Vec<(u64, u16)> {
    deployments
        .iter()
        .flat_map(|deployment| {
            deployment["instances"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|instance| {
            let port = instance["port"].as_u64()?;
            Some((instance["pid"].as_u64()?, u16::try_from(port).ok()?))
        })
        .collect()
}

fn demo_services() -> [String; 2] {
    [
        workspace().join("services/writer").display().to_string(),
        workspace().join("services/reader").display().to_string(),
    ]
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
        headers,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_flow_scale_kill_down_and_sessions_that_survive() {
    require_tools();
    let secret = "canary-session-secret-3f9a71";
    let project = Project::demo(secret);
    // Recorded now, restored by `stack up` from the state file.
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let [writer, reader] = demo_services();
    let mut up = Up::start(&project, &[&writer, &reader, "--dotenv"]);
    up.wait_ready("writer");
    up.wait_ready("reader");

    // The 2017 demo, through the alias, with a cookie jar.
    let host = "counter-demo.localhost";
    let browser = up.client(host);
    assert_eq!(get(&browser, &up.url(host, "/")).await.0, 403);
    assert_eq!(get(&browser, &up.url(host, "/login")).await.0, 200);
    assert_eq!(get(&browser, &up.url(host, "/increment")).await.0, 200);
    assert_eq!(get(&browser, &up.url(host, "/increment")).await.0, 200);
    let (status, home, _) = get(&browser, &up.url(host, "/")).await;
    assert_eq!(status, 200, "{home}");
    assert_eq!(home["count"], 2, "{home}");
    assert_eq!(get(&browser, &up.url(host, "/logout")).await.0, 200);
    assert_eq!(get(&browser, &up.url(host, "/")).await.0, 403);

    // Two readers: both answer.
    let scaled = project.stack_ok(&["scale", "reader", "2"]);
    assert!(scaled.contains("scaled to 2 instances"), "{scaled}");
    let reader_id = project.live("reader")["id"].as_str().unwrap().to_string();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (_, _, headers) = get(&browser, &up.url(host, "/")).await;
        assert_eq!(headers["x-stack-deployment"], reader_id.as_str());
        seen.insert(headers["x-stack-instance"].to_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "instances seen: {seen:?}");

    // kill -9 of one reader under continuous requests: no request fails, and it comes back.
    let before = project.live("reader");
    let victim = before["instances"][1]["pid"].as_u64().unwrap();
    let load = {
        let browser = browser.clone();
        let url = up.url(host, "/");
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                match browser.get(&url).send().await {
                    Ok(response) if response.status() == 403 => ok += 1,
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let (ok, failed) = load.await.unwrap();
    // The supervisor sees the exit within milliseconds and the proxy retries connect failures
    // on the other instance, so requests do not fail. The one exception: a request already
    // written to the killed process's keep-alive connection, which the proxy does not replay
    // (it never replays a request whose bytes went out), so at most that one gets a 502.
    assert!(
        failed.len() <= 1 && failed.iter().all(|failure| failure.starts_with("502")),
        "{} failed requests: {failed:?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} requests");
    wait_until("the killed reader to come back", DEADLINE, || {
        let reader = project.live("reader");
        let instance = &reader["instances"][1];
        reader["ready"] == 2
            && instance["restarts"].as_u64() >= Some(1)
            && instance["pid"] != victim
    });

    // A session to find again after `down` + `up`.
    assert_eq!(get(&browser, &up.url(host, "/login")).await.0, 200);
    assert_eq!(get(&browser, &up.url(host, "/increment")).await.0, 200);

    // `stack down`: no process of the stack, no listening port.
    let running = project.ls();
    let processes = instances(&running);
    assert_eq!(processes.len(), 3);
    let redis_port: u16 = up
        .wait_for("Redis ready at redis://:***@127.0.0.1:", DEADLINE)
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .expect("the Redis line has a port");
    let down = project.stack_ok(&["down"]);
    assert!(down.contains("Stopped everything"), "{down}");
    assert!(up.wait_exit(Duration::from_secs(15)).success());
    for (pid, port) in &processes {
        assert!(!alive(*pid), "instance {pid} survived `stack down`");
        assert!(!listening(*port), "port {port} still listens");
    }
    assert!(!listening(redis_port), "Redis still listens");
    assert!(!listening(up.port), "the proxy still listens");
    assert!(!project.path().join(".stack/stack.sock").exists());
    let mut outputs = up.output();
    drop(up);

    // `stack up` again: same deployments (nothing changed), and the session is still there.
    let mut up = Up::start(&project, &[&writer, &reader, "--dotenv"]);
    up.wait_ready("writer");
    up.wait_ready("reader");
    assert!(
        up.output().contains(&reader_id),
        "an unchanged build keeps its deployment"
    );
    let browser_again = up.client(host);
    // Carry the cookie over to the new port.
    let cookie = {
        let response = browser.get(up.url(host, "/")).send().await.unwrap();
        assert_eq!(response.status(), 200, "the session survived down + up");
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(cookie["count"], 1, "{cookie}");
    assert_eq!(get(&browser_again, &up.url(host, "/")).await.0, 403);
    project.stack_ok(&["down"]);
    assert!(up.wait_exit(Duration::from_secs(15)).success());
    outputs.push_str(&up.output());

    // The canary secret is in no output and no log file.
    for (what, text) in [("stack up output", outputs), ("logs", project.all_logs())] {
        assert!(!text.contains(secret), "the secret leaked into the {what}");
    }
}

/// The README's first command: `stack up` with no `.env` at all runs the demo on a managed
/// Redis and a per-project generated secret, which it never prints and keeps for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_with_no_env_file_on_a_generated_secret() {
    require_tools();
    let project = Project::demo("unused");
    fs::remove_file(project.path().join(".env")).unwrap();
    let [writer, reader] = demo_services();
    let mut up = Up::start(&project, &[&writer, &reader]);
    up.wait_ready("writer");
    up.wait_ready("reader");
    let secret = fs::read_to_string(project.path().join(".stack/session-secret")).unwrap();
    assert_eq!(secret.len(), 64, "32 random bytes, hex");

    // A login and an increment: the secret signs, the managed Redis stores.
    let writer_host = "writer.localhost";
    let login = up
        .client(writer_host)
        .get(up.url(writer_host, "/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let increment = |up: &Up| {
        up.client(writer_host)
            .get(up.url(writer_host, "/increment"))
            .header("cookie", cookie.clone())
            .send()
    };
    let body: Value = increment(&up).await.unwrap().json().await.unwrap();
    assert_eq!(body["count"], 1);
    drop(up);

    // The same secret next time, so the session outlives the restart.
    let mut again = Up::start(&project, &[&writer, &reader]);
    again.wait_ready("writer");
    let line = again.wait_for("SESSION_SECRET is not set", DEADLINE);
    assert!(line.contains("generated secret"), "{line}");
    assert_eq!(
        fs::read_to_string(project.path().join(".stack/session-secret")).unwrap(),
        secret
    );
    let body: Value = increment(&again).await.unwrap().json().await.unwrap();
    assert_eq!(body["count"], 2);
    // `stack redis get <cookie>` checks it with the secret the services sign with.
    let value = cookie.strip_prefix("connect.sid=").unwrap();
    let found = project.stack_ok(&["redis", "get", value]);
    assert!(found.contains(r#""count": 2"#), "{found}");
    assert!(!found.contains(&secret), "{found}");
    let output = again.output();
    assert!(
        !output.contains(&secret),
        "the secret was printed:\n{output}"
    );
    for entry in fs::read_dir(project.path().join(".stack/logs")).unwrap() {
        let log = fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!log.contains(&secret), "the secret is in a log file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_service_backs_off_then_is_crashed_while_the_other_serves() {
    require_tools();
    let secret = "canary-e-secret-77c1";
    let project = Project::fixture("node-pair");
    project.stack_ok(&["alias", "pair.localhost", "--rules", "aliases.json"]);
    let env = format!("SESSION_SECRET={secret}");
    let mut up = Up::start(&project, &["-e", &env]);
    up.wait_ready("hello");
    let started = Instant::now();
    wait_until("crasher to be CRASHED", Duration::from_secs(40), || {
        project.live("crasher")["state"] == "CRASHED"
    });
    let crashed_after = started.elapsed();
    // 1 + 2 + 4 + 8 s of backoff between five starts.
    assert!(
        crashed_after >= Duration::from_secs(13),
        "{crashed_after:?}"
    );

    // From the stored log: five runs, and each restart waits the backoff (1, 2, 4, 8 s).
    let crasher_id = project.live("crasher")["id"].as_str().unwrap().to_string();
    let log =
        fs::read_to_string(project.path().join(format!(".stack/logs/{crasher_id}.log"))).unwrap();
    let time_of = |line: &str| -> u64 { line.split(' ').next().unwrap().parse().unwrap() };
    let runs = log
        .lines()
        .filter(|line| line.contains("exiting at once"))
        .count();
    assert_eq!(runs, 5, "{log}");
    let waits: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("restarting in"))
        .map(time_of)
        .collect();
    let restarts: Vec<u64> = log
        .lines()
        .filter(|line| line.contains("[stack] restarting (restart"))
        .map(time_of)
        .collect();
    assert_eq!((waits.len(), restarts.len()), (4, 4), "{log}");
    for (index, expected) in [1000u64, 2000, 4000, 8000].iter().enumerate() {
        let gap = restarts[index] - waits[index];
        assert!(
            gap >= *expected && gap < expected + 500,
            "restart {index} came {gap} ms after the failure, expected {expected} ms:\n{log}"
        );
    }
    assert!(log.contains("CRASHED"), "{log}");
    let listing = project.stack_ok(&["ls"]);
    assert!(
        listing.contains("CRASHED") && listing.contains("READY"),
        "{listing}"
    );

    // The crashed service answers 503 JSON naming it, on its own host and on its rule only.
    let client = up.client("crasher.localhost");
    let (status, body, _) = get(&client, &up.url("crasher.localhost", "/")).await;
    assert_eq!(status, 503);
    assert!(body.to_string().contains("crasher"), "{body}");
    let pair = up.client("pair.localhost");
    let (status, body, _) = get(&pair, &up.url("pair.localhost", "/boom/x")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("crasher"), "{body}");
    let (status, body, _) = get(&pair, &up.url("pair.localhost", "/")).await;
    assert_eq!((status, &body["service"]), (200, &Value::from("hello")));

    // The service printed its secret; stack masked it everywhere.
    up.wait_for("hello: starting with SESSION_SECRET=***", DEADLINE);
    let logs_output = project.stack_ok(&["logs", "hello", "-n", "10"]);
    assert!(logs_output.contains("SESSION_SECRET=***"), "{logs_output}");
    // `--since`: a duration back from now keeps the lines, a time to come keeps none, and a
    // value that is neither is refused with the forms that work.
    let recent = project.stack_ok(&["logs", "hello", "--since", "1h"]);
    assert!(recent.contains("hello.0 | hello: listening"), "{recent}");
    let none = project.stack_ok(&["logs", "hello", "--since", "2099-01-01T00:00:00Z"]);
    assert!(!none.contains("hello.0 |"), "{none}");
    let refused = project.stack(&["logs", "hello", "--since", "yesterday"]);
    assert_eq!(refused.code, 1);
    let refusal = &refused.stderr;
    assert!(
        refusal.contains("Error! `--since yesterday` is neither a duration")
            && refusal.contains("1h30m"),
        "{refusal}"
    );
    for text in [up.output(), project.all_logs(), logs_output] {
        assert!(!text.contains(secret), "the secret leaked:\n{text}");
    }

    // `stack rm` refuses the current, running deployment; scaled to 0 it goes.
    let refused = project.stack(&["rm", &crasher_id]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("stack scale"));
    project.stack_ok(&["scale", "crasher", "0"]);
    project.stack_ok(&["rm", &crasher_id]);
    assert!(project
        .ls()
        .iter()
        .all(|deployment| deployment["service"] != "crasher"));
    assert!(!project
        .path()
        .join(".stack/deployments")
        .join(&crasher_id)
        .exists());

    // Ctrl-C stops everything within the grace period and exits 130.
    let processes = instances(&project.ls());
    let interrupted = Instant::now();
    kill(up.pid(), Signal::SIGINT).unwrap();
    let status = up.wait_exit(Duration::from_secs(12));
    assert_eq!(status.code(), Some(130));
    assert!(interrupted.elapsed() < Duration::from_secs(10));
    for (pid, _) in processes {
        assert!(!alive(pid), "{pid} survived Ctrl-C");
    }

    // Without a running `stack up`, scale is recorded for the next one and logs read the disk.
    let recorded = project.stack_ok(&["scale", "hello", "3"]);
    assert!(
        recorded.contains("applies at the next `stack up`"),
        "{recorded}"
    );
    let state: Value = serde_json::from_str(
        &fs::read_to_string(project.path().join(".stack/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["scale"]["hello"], 3);
    let stored = project.stack_ok(&["logs", "hello", "-n", "50"]);
    assert!(stored.contains("hello.0 | hello: listening"), "{stored}");
    let recent = project.stack_ok(&["logs", "hello", "--since", "1h"]);
    assert!(recent.contains("hello.0 | hello: listening"), "{recent}");
    let none = project.stack_ok(&["logs", "hello", "--since", "2099-01-01T00:00:00Z"]);
    assert!(!none.contains("hello.0 |"), "{none}");
    let only = project.stack_ok(&["logs", "hello.0", "-n", "50"]);
    assert!(only.contains("hello.0 | hello: listening"), "{only}");
    project
        .stack(&["logs", "hello.4"])
        .assert_refused(&["Error! `hello-", "has no lines from instance 4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_up_per_project_external_redis_masked_and_sigkill_leaves_nothing() {
    require_tools();
    let password = "canary-redis-pw-9d2e";
    let redis = session::testing::RedisServer::start_with_password(password);
    let project = Project::fixture("node-pair");
    let url = format!("redis://:{password}@127.0.0.1:{}/0", redis.port());
    let env = format!("REDIS_SESSION_URL={url}");
    let mut up = Up::start(&project, &["hello", "-e", &env]);
    up.wait_ready("hello");
    let redis_line = up.wait_for("(REDIS_SESSION_URL) answers", DEADLINE);
    assert!(redis_line.contains(":***@127.0.0.1"), "{redis_line}");
    assert!(
        !project.path().join(".stack/redis").exists(),
        "no managed Redis when the URL is set"
    );

    // A second `stack up` in the same directory is refused and starts nothing.
    let second = project.stack(&["up", "hello", "--port", "0"]);
    assert_eq!(second.code, 1);
    let refusal = &second.stderr;
    assert!(refusal.contains("already running"), "{refusal}");
    assert_eq!(project.ls()[0]["instances"].as_array().unwrap().len(), 1);

    // The control socket is for this user only.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(project.path().join(".stack/stack.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Aliases apply live through the control socket, all or nothing: the real command...
    let said = project.stack_ok(&["alias", "hi.localhost", "hello"]);
    assert!(said.contains("Applied live"), "{said}");
    // ...and the library call it makes, with a `dest` that resolves to nothing.
    let project_dir = project.path().to_path_buf();
    let applied = tokio::task::spawn_blocking(move || {
        let good = AliasChange::Set {
            host: "hi.localhost".into(),
            alias: Alias::new(AliasTarget::Plain {
                target: "hello".into(),
            }),
        };
        let bad = AliasChange::Set {
            host: "bad.localhost".into(),
            alias: Alias::new(AliasTarget::Plain {
                target: "nothing-here".into(),
            }),
        };
        (
            apply_alias_change(&project_dir, &good).map_err(|error| error.to_string()),
            apply_alias_change(&project_dir, &bad).map_err(|error| error.to_string()),
        )
    })
    .await
    .unwrap();
    assert_eq!(applied.0, Ok(Applied::Live));
    let refusal = applied.1.unwrap_err();
    assert!(
        refusal.contains("rule 1") && refusal.contains("nothing-here"),
        "{refusal}"
    );
    let (status, body, _) = get(&up.client("hi.localhost"), &up.url("hi.localhost", "/")).await;
    assert_eq!((status, &body["service"]), (200, &Value::from("hello")));
    let state = fs::read_to_string(project.path().join(".stack/state.json")).unwrap();
    assert!(
        state.contains("hi.localhost") && !state.contains("bad.localhost"),
        "{state}"
    );

    // `stack logs -f` shows the lines of an instance that starts later.
    let follow = Up::spawn(&project, &["logs", "hello", "-f", "-n", "1"], &[]);
    project.stack_ok(&["scale", "hello", "2"]);
    wait_until("`stack logs -f` to show the new instance", DEADLINE, || {
        follow.output().contains("hello.1 | hello: listening")
    });
    drop(follow);

    // Scaling down drains: slow requests in flight on the stopped instance still succeed.
    let hello = up.client("hello.localhost");
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let hello = hello.clone();
            let url = up.url("hello.localhost", "/slow");
            tokio::spawn(async move {
                hello
                    .get(&url)
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    project.stack_ok(&["scale", "hello", "1"]);
    for request in slow {
        assert_eq!(
            request.await.unwrap().map_err(|error| error.to_string()),
            Ok(200)
        );
    }
    project.stack_ok(&["scale", "hello", "2"]);

    // `stack up` killed with SIGKILL: its services are gone 2 s later (npm's node child too).
    up.wait_for("hello: listening", DEADLINE);
    let hello_ports: Vec<u16> = instances(&project.ls())
        .iter()
        .map(|(_, port)| *port)
        .collect();
    assert_eq!(hello_ports.len(), 2);
    kill(up.pid(), Signal::SIGKILL).unwrap();
    up.wait_exit(Duration::from_secs(5));
    wait_until(
        "the services to die with stack up",
        Duration::from_secs(2),
        || hello_ports.iter().all(|port| !listening(*port)),
    );
    for text in [up.output(), project.all_logs()] {
        assert!(
            !text.contains(password),
            "the Redis password leaked:\n{text}"
        );
    }
    // The stale socket does not make the next commands think a stack runs, and the URLs it
    // shows have the port the last `stack up` used.
    let listing = project.stack_ok(&["ls"]);
    assert!(listing.contains("no `stack up` running"), "{listing}");
    assert!(
        listing.contains(&format!(".localhost:{} ", up.port)),
        "{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_is_probed_with_the_services_ca_and_its_password_never_shows() {
    require_tools();
    let password = "canary-tls-redis-pw-51c7";
    let redis = session::testing::RedisServer::start_tls_with_password(password);
    let project = Project::fixture("node-pair");
    let url = format!("REDIS_SESSION_URL={}", redis.url());
    let ca = format!("REDIS_TLS_CA_FILE={}", redis.ca_file().display());

    // With the CA the services get, the probe gets through TLS and AUTH.
    let mut up = Up::start(&project, &["hello", "-e", &url, "-e", &ca]);
    let line = up.wait_for("(REDIS_SESSION_URL) answers", DEADLINE);
    assert!(line.contains("rediss://:***@127.0.0.1"), "{line}");
    up.wait_ready("hello");
    kill(up.pid(), Signal::SIGINT).unwrap();
    assert_eq!(up.wait_exit(Duration::from_secs(12)).code(), Some(130));
    let first_output = up.output();

    // Without it, the server's certificate is not trusted: a warning that says so, and the
    // stack still starts (the services report the same until it is fixed).
    let mut up = Up::start(&project, &["hello", "-e", &url]);
    let line = up.wait_for("(REDIS_SESSION_URL) does not answer", DEADLINE);
    assert!(line.contains("certificate"), "{line}");
    up.wait_ready("hello");
    for text in [first_output, up.output(), project.all_logs()] {
        assert!(!text.contains(password), "the password leaked:\n{text}");
    }
}

#[test]
fn up_where_there_is_nothing_to_run_says_so_and_writes_nothing() {
    let project = Project::empty();
    let output = project.stack(&["up", "--port", "0", "--https-port", "0"]);
    assert_eq!(output.code, 1, "{}", output.all());
    let text = output.all();
    assert!(text.contains("Error! no services found under"), "{text}");
    assert!(text.contains("stack init"), "{text}");
    let written: Vec<_> = fs::read_dir(project.path()).unwrap().collect();
    assert!(written.is_empty(), "wrote {written:?}");
    assert!(
        fs::read_dir(project.stack_home.path())
            .unwrap()
            .next()
            .is_none(),
        "no CA was made for nothing"
    );
}

#[test]
fn a_bad_env_line_names_the_line_hides_the_value_and_starts_nothing() {
    require_tools();
    let project = Project::fixture("node-pair");
    fs::write(
        project.path().join(".env"),
        "SESSION_SECRET=canary-bad-env-1\nTHIS LINE canary-bad-env-2\nGOOD=1\nBAD-KEY=canary-bad-env-3\n",
    )
    .unwrap();
    let output = project.stack(&["up", "--dotenv", "--port", "0"]);
    assert_eq!(output.code, 1);
    let text = output.all();
    assert!(text.contains(".env:2:1: expected `KEY=VALUE`"), "{text}");
    assert!(
        text.contains(".env:4:1: `BAD-KEY` is not a valid variable name"),
        "{text}"
    );
    assert!(!text.contains("canary"), "a value was printed:\n{text}");
    assert!(text.contains("Nothing was started"), "{text}");
    assert!(
        !project.path().join(".stack/state.json").exists(),
        "nothing was built or recorded"
    );
    assert!(!project.path().join(".stack/logs").exists());
}

#[test]
fn values_no_process_can_receive_are_refused_at_their_place_and_a_bom_is_no_part_of_a_key() {
    require_tools();
    let project = Project::fixture("node-pair");
    let long = "x".repeat(200 * 1024);
    fs::write(
        project.path().join(".env"),
        "\u{feff}SESSION_SECRET=canary-bom-1\nNUL=\"canary\u{0}nul\"\nBIG=".to_string()
            + &long
            + "\n",
    )
    .unwrap();
    let output = project.stack(&["up", "--dotenv", "--port", "0"]);
    assert_eq!(output.code, 1, "{}", output.all());
    let text = output.all();
    assert!(
        text.contains(".env:2:5: the value of `NUL` holds a NUL byte"),
        "{text}"
    );
    assert!(
        text.contains(".env:3:5: `BIG=...` is 201 KiB; a process receives at most 128 KiB"),
        "{text}"
    );
    assert!(
        !text.contains("SESSION_SECRET"),
        "the BOM was taken as part of a key:\n{text}"
    );
    assert!(
        !text.contains("canary") && !text.contains("xxxx"),
        "a value was printed:\n{text}"
    );
    assert!(text.contains("Nothing was started"), "{text}");
    assert!(!project.path().join(".stack/logs").exists());
}

#[test]
fn without_redis_server_on_path_up_says_how_to_install_it() {
    require_tools();
    let project = Project::fixture("node-pair");
    // With an empty PATH, redis-server, node and npm are all missing: one error names them.
    let empty = tempfile::tempdir().unwrap();
    let mut command = project.command(&["up", "hello", "--port", "0"]);
    command.env("PATH", empty.path());
    let output = project.run(&mut command);
    assert_eq!(output.code, 1);
    let stderr = &output.stderr;
    assert!(
        stderr.contains("Error! `redis-server`, `node` and `npm` are not installed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("sudo apt-get install redis-server nodejs npm"),
        "{stderr}"
    );
    assert!(stderr.contains("REDIS_SESSION_URL"), "{stderr}");
    assert!(!project.path().join(".stack/stack.sock").exists());
}

#[test]
fn a_missing_redis_server_is_named_within_two_seconds_and_nothing_is_built() {
    require_tools();
    // A Cargo service: without the check first, cargo would build for a while before Redis
    // was found missing.
    let project = Project::fixture("watch-hello");
    let bin = tempfile::tempdir().unwrap();
    for tool in ["cargo", "rustc", "node", "npm"] {
        if let Some(found) = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
        {
            std::os::unix::fs::symlink(found, bin.path().join(tool)).unwrap();
        }
    }
    let mut command = project.command(&["up", "--port", "0"]);
    command.env("PATH", bin.path());
    let started = Instant::now();
    let output = project.run(&mut command);
    let took = started.elapsed();
    assert_eq!(output.code, 1, "{}", output.all());
    assert!(
        output
            .stderr
            .starts_with("Error! `redis-server` is not installed"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("nothing was built"),
        "{}",
        output.stderr
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!project.path().join("target").exists(), "cargo ran");
    assert!(!project.path().join(".stack/deployments").exists());
}
