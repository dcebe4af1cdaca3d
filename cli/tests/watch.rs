//! Watch and hot swap end to end: the real `stack` binary on a temp copy of a project, real
//! file saves, real cargo builds, real processes, a real redis-server, `--port 0`.
//!
//! Two projects: `tests/fixtures/watch-hello` (one std-only Rust service that rebuilds in about
//! a second, built into `target/watch-fixture` through CARGO_TARGET_DIR so rebuilds are
//! incremental; one target dir per test) for code changes, and the demo's writer and reader (named by path, built in
//! this workspace) for redeploys under load with real sessions; those redeploys are triggered
//! by `.env` saves, which redeploy every service with the new environment through the same
//! build-and-swap path as a code change (ten full rebuilds of the demo would not fit the
//! suite's time budget on a 2-core machine).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{alive, require, wait_until, workspace, Project, Up, BUILD_DEADLINE};

/// Rebuilds of the fixture take a second alone, much longer while other builds share the cores.
const DEADLINE: Duration = Duration::from_secs(180);
/// How long to watch for a build that must not happen.
const QUIET_WINDOW: Duration = Duration::from_millis(1500);

/// What only these tests ask of a running `stack up`.
impl Up {
    /// Asserts that no further line contains `needle` during the quiet window.
    fn assert_no_more(&self, needle: &str, seen: usize) {
        let deadline = Instant::now() + QUIET_WINDOW;
        while Instant::now() < deadline {
            assert_eq!(
                self.count(needle),
                seen,
                "unexpected `{needle}`:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn pids(deployment: &Value) -> Vec<u64> {
    deployment["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|instance| instance["pid"].as_u64())
        .collect()
}

/// GET: status, body, the `x-stack-deployment` that answered.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|error| panic!("{url}: {error}"));
    let status = response.status().as_u16();
    let deployment = response
        .headers()
        .get("x-stack-deployment")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, response.text().await.unwrap(), deployment)
}

/// Clients that GET `path` in a loop until stopped, counting answers that are not `expect`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(clients: Vec<reqwest::Client>, url: String, expect: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = clients
            .into_iter()
            .map(|client| {
                let (stop, ok, failures, url) =
                    (stop.clone(), ok.clone(), failures.clone(), url.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(response) if response.status().as_u16() == expect => {
                                if response.bytes().await.is_ok() {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    failures.lock().unwrap().push("body cut".into());
                                }
                            }
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().await.unwrap_or_default();
                                failures.lock().unwrap().push(format!("{status}: {body}"));
                            }
                            Err(error) => failures.lock().unwrap().push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the clients; answers (successes, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_change_is_served_by_a_new_deployment_and_the_old_one_stops() {
    require("redis-server");
    let project = Project::hello("saved-change");
    let mut up = Up::start(&project, &[]);
    up.wait_watching(&["hello"]);
    let host = "hello.localhost";
    let client = up.client(host);
    let (status, body, first_id) = get(&client, &up.url(host, "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello v1\n"));
    let first_pids = pids(&project.live("hello"));

    project.set_message("hello v2");
    let ready = up.wait_for_nth("> Ready! http://hello-", 2, DEADLINE);
    assert!(
        ready.contains("[build ") && ready.contains("s, swap "),
        "{ready}"
    );
    let (status, body, second_id) = get(&client, &up.url(host, "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello v2\n"));
    assert_ne!(first_id, second_id, "a new deployment id");
    assert!(ready.contains(&second_id), "{ready}");
    wait_until("the old deployment's process to stop", DEADLINE, || {
        first_pids.iter().all(|pid| !alive(*pid))
    });
    // Its artifact is kept (rollback), and `stack ls` lists it as stopped beside the live one.
    assert!(project
        .path()
        .join(".stack/deployments")
        .join(&first_id)
        .is_dir());
    let listed = project.ls();
    let old = listed
        .iter()
        .find(|d| d["id"] == first_id.as_str())
        .unwrap();
    assert_eq!(old["state"], "STOPPED");
    assert_eq!(old["current"], false);
    let table = project.stack_ok(&["ls"]);
    assert!(table.contains(&format!("{second_id} (live)")), "{table}");
    // The old id no longer routes.
    let old_client = up.client(&format!("{first_id}.localhost"));
    let (status, _, _) = get(&old_client, &up.url(&format!("{first_id}.localhost"), "/")).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_is_shown_the_old_deployment_keeps_answering_and_the_fix_deploys() {
    require("redis-server");
    let project = Project::hello("syntax-error");
    let mut up = Up::start(&project, &[]);
    up.wait_watching(&["hello"]);
    let host = "hello.localhost";
    let client = up.client(host);
    let (_, _, first_id) = get(&client, &up.url(host, "/")).await;

    let text = fs::read_to_string(project.main_rs()).unwrap();
    fs::write(
        project.main_rs(),
        text.replace("fn main() {", "fn main() { let broken = ;"),
    )
    .unwrap();
    up.wait_for(
        "the build failed: `hello` did not compile (the compiler's output is above)",
        DEADLINE,
    );
    let output = up.output();
    assert!(output.contains("error: expected expression"), "{output}");
    assert!(
        output.contains(&format!("`{first_id}` keeps serving")),
        "{output}"
    );
    let (status, body, id) = get(&client, &up.url(host, "/")).await;
    assert_eq!(
        (status, body.as_str(), id.as_str()),
        (200, "hello v1\n", first_id.as_str())
    );

    fs::write(project.main_rs(), text.replace("hello v1", "hello fixed")).unwrap();
    up.wait_for_nth("> Ready! http://hello-", 2, DEADLINE);
    let (status, body, fixed_id) = get(&client, &up.url(host, "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello fixed\n"));
    assert_ne!(fixed_id, first_id);

    // It compiles but dies at start: reported, and the live deployment keeps serving.
    fs::write(
        project.main_rs(),
        text.replace("fn main() {", "fn main() {\n    std::process::exit(3);"),
    )
    .unwrap();
    up.wait_for("hello: the new deployment did not start", DEADLINE);
    let (status, body, id) = get(&client, &up.url(host, "/")).await;
    assert_eq!(
        (status, body.as_str(), id.as_str()),
        (200, "hello fixed\n", fixed_id.as_str())
    );
    assert_eq!(project.live("hello")["id"], fixed_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_brings_the_old_behaviour_back_in_under_a_second_with_no_failed_request() {
    require("redis-server");
    let project = Project::hello("rollback");
    let mut up = Up::start(&project, &[]);
    up.wait_watching(&["hello"]);
    let host = "hello.localhost";
    let (_, _, first_id) = get(&up.client(host), &up.url(host, "/")).await;
    project.set_message("hello v2");
    up.wait_for_nth("> Ready! http://hello-", 2, DEADLINE);
    let (_, body, second_id) = get(&up.client(host), &up.url(host, "/")).await;
    assert_eq!(body, "hello v2\n");

    let load = Load::start(
        (0..20).map(|_| up.client(host)).collect(),
        up.url(host, "/"),
        200,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let answer = project.stack_ok(&["rollback", "hello"]);
    let took = started.elapsed();
    let (_, body, id) = get(&up.client(host), &up.url(host, "/")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failures) = load.finish().await;
    assert!(
        took < Duration::from_secs(1),
        "rollback took {took:?}: {answer}"
    );
    assert!(
        answer.contains(&format!("hello now serves {first_id} (was {second_id})")),
        "{answer}"
    );
    assert_eq!(
        (body.as_str(), id.as_str()),
        ("hello v1\n", first_id.as_str())
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "only {ok} requests");
    assert_eq!(project.live("hello")["id"], first_id.as_str());

    // Named: forward again to the second one; a wrong name is a clear error.
    let answer = project.stack_ok(&["rollback", "hello", &second_id]);
    assert!(
        answer.contains(&format!("now serves {second_id}")),
        "{answer}"
    );
    let wrong = project.stack(&["rollback", "hello", "hello-nosuchthing"]);
    assert_ne!(wrong.code, 0);
    let stderr = &wrong.stderr;
    assert!(
        stderr.contains("Error! `hello-nosuchthing` is not a kept deployment of `hello`"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&first_id),
        "the hint lists the kept ones: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_build_once_noise_never_and_rename_saves_every_time() {
    require("redis-server");
    let project = Project::hello("bursts");
    let mut up = Up::start(&project, &["--keep", "2"]);
    up.wait_watching(&["hello"]);
    const BUILDING: &str = "> Building hello";

    // Twenty saves within 200 ms: one build.
    for round in 0..20 {
        project.set_message(&format!("burst {round}"));
        std::thread::sleep(Duration::from_millis(9));
    }
    up.wait_for_nth("> Ready! http://hello-", 2, DEADLINE);
    up.assert_no_more(BUILDING, 1);
    let (_, body, _) = get(
        &up.client("hello.localhost"),
        &up.url("hello.localhost", "/"),
    )
    .await;
    assert_eq!(body, "burst 19\n");

    // Editor temp files, build output, gitignored files: no build.
    let src = project.path().join("services/hello/src");
    for noise in [
        src.join(".main.rs.swp"),
        src.join("main.rs~"),
        src.join("4913"),
        src.join("#main.rs#"),
        project.path().join("services/hello/target/debug/hello"),
        project.path().join("services/hello/debug.log"),
    ] {
        fs::create_dir_all(noise.parent().unwrap()).unwrap();
        fs::write(&noise, "noise").unwrap();
    }
    up.assert_no_more(BUILDING, 1);

    // An atomic rename-save: one build; the next save builds again.
    for (round, message) in ["renamed 1", "renamed 2"].iter().enumerate() {
        let temp = src.join(".main.rs.tmp-4242");
        fs::write(&temp, project.source_with(message)).unwrap();
        fs::rename(&temp, project.main_rs()).unwrap();
        up.wait_for_nth("> Ready! http://hello-", 3 + round, DEADLINE);
        up.assert_no_more(BUILDING, 2 + round);
        let (_, body, _) = get(
            &up.client("hello.localhost"),
            &up.url("hello.localhost", "/"),
        )
        .await;
        assert_eq!(body, format!("{message}\n"));
    }

    // `--keep 2`: four deployments were made, two artifacts are left, the live one among them.
    let live = project.live("hello")["id"].as_str().unwrap().to_string();
    let kept: Vec<String> = fs::read_dir(project.path().join(".stack/deployments"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.contains(&live), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_build_queue_exactly_one_follow_up_build() {
    require("redis-server");
    let project = Project::hello("during-build");
    // Every build of the fixture takes 2 s more, so the saves below land during one.
    let mut up = Up::start_with_env(&project, &[], &[("HELLO_SLOW_BUILD_MS", "2000")]);
    up.wait_watching(&["hello"]);
    const BUILDING: &str = "> Building hello";
    project.set_message("first");
    up.wait_for(BUILDING, DEADLINE);
    // `stack ls` shows the build beside the deployment that keeps serving.
    let listed = project.ls();
    assert!(
        listed
            .iter()
            .any(|d| d["service"] == "hello" && d["state"] == "BUILDING" && d["id"] == ""),
        "{listed:?}"
    );
    assert!(listed
        .iter()
        .any(|d| d["service"] == "hello" && d["state"] == "READY" && d["current"] == true));
    let table = project.stack_ok(&["ls"]);
    assert!(
        table.contains("hello (building)") && table.contains("BUILDING"),
        "{table}"
    );
    // Three separate changes (each longer apart than the quiet period) during that build.
    for message in ["second", "third", "fourth"] {
        std::thread::sleep(Duration::from_millis(250));
        project.set_message(message);
    }
    assert_eq!(up.count("> Ready! http://hello-"), 1, "{}", up.output());
    up.wait_for_nth("> Ready! http://hello-", 3, DEADLINE);
    up.assert_no_more(BUILDING, 2);
    assert!(
        project.ls().iter().all(|d| d["state"] != "BUILDING"),
        "no build left once the last one is deployed"
    );
    let (_, body, _) = get(
        &up.client("hello.localhost"),
        &up.url("hello.localhost", "/"),
    )
    .await;
    assert_eq!(body, "fourth\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watch_means_no_redeploy() {
    require("redis-server");
    let project = Project::hello("no-watch");
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for("> Ready! http://hello-", BUILD_DEADLINE);
    project.set_message("not deployed");
    up.assert_no_more("> Building", 0);
    assert!(!up.output().contains("Watching for changes"));
    let (_, body, _) = get(
        &up.client("hello.localhost"),
        &up.url("hello.localhost", "/"),
    )
    .await;
    assert_eq!(body, "hello v1\n");
}

/// Ten `.env` redeploys of writer and reader under 20 logged-in clients: no failed request,
/// every session still valid; with the reader at 2 instances, then at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_redeploys_under_load_fail_no_request_and_keep_every_session() {
    require("redis-server");
    let secret = "canary-watch-secret-8c1d22";
    let project = Project::demo(secret);
    project.stack_ok(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    let writer = workspace().join("services/writer").display().to_string();
    let reader = workspace().join("services/reader").display().to_string();
    let mut up = Up::start(&project, &[&writer, &reader, "--dotenv"]);
    up.wait_watching(&["writer", "reader"]);
    let host = "counter-demo.localhost";

    let mut clients = Vec::new();
    for _ in 0..20 {
        let client = up.client(host);
        assert_eq!(get(&client, &up.url(host, "/login")).await.0, 200);
        assert_eq!(get(&client, &up.url(host, "/increment")).await.0, 200);
        clients.push(client);
    }
    let mut n_ready = 2; // writer and reader's first deployments
    for instances in [2, 1] {
        project.stack_ok(&["scale", "reader", &instances.to_string()]);
        let load = Load::start(clients.clone(), up.url(host, "/"), 200);
        let mut reader_ids = Vec::new();
        for round in 0..10 {
            fs::write(
                project.path().join(".env"),
                format!("SESSION_SECRET={secret}\nROUND={instances}-{round}\n"),
            )
            .unwrap();
            n_ready += 2;
            up.wait_for_nth("> Ready! http://", n_ready, DEADLINE);
            let live = project.live("reader");
            assert_eq!(live["wanted"], instances, "same instance count");
            reader_ids.push(live["id"].as_str().unwrap().to_string());
        }
        let (ok, failures) = load.finish().await;
        assert!(
            failures.is_empty(),
            "reader at {instances}: {} failed requests: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(ok > 100, "only {ok} requests");
        reader_ids.dedup();
        assert_eq!(reader_ids.len(), 10, "ten new reader deployments");
    }
    for client in &clients {
        let response = client.get(up.url(host, "/")).send().await.unwrap();
        assert_eq!(response.status(), 200, "the session is still valid");
        let home: Value = response.json().await.unwrap();
        assert_eq!(home["count"], 1, "{home}");
    }
    // A bad `.env` is reported with where, and changes nothing.
    let before = project.live("reader")["id"].clone();
    fs::write(
        project.path().join(".env"),
        format!("SESSION_SECRET={secret}\nnot a line\n"),
    )
    .unwrap();
    up.wait_for("the new environment has errors", DEADLINE);
    let output = up.output();
    assert!(output.contains(".env:2"), "{output}");
    assert_eq!(project.live("reader")["id"], before);
    assert!(!output.contains(secret), "the secret leaked:\n{output}");
}

/// Processes whose working directory is inside `dir` (cargo, rustc, build scripts of a build).
fn processes_in(dir: &Path) -> Vec<u64> {
    let dir = dir.canonicalize().unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u64 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = fs::read_link(entry.path().join("cwd")).ok()?;
            cwd.starts_with(&dir).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_build_is_listed_other_commands_wait_and_stack_down_stops_it() {
    require("redis-server");
    let project = Project::hello("first-build");
    // A first build held until a gate that never opens: only `stack down` can end it.
    let gate = project.path().join("never-opened");
    let mut up = Up::launch(
        &project,
        &[],
        &[("HELLO_BUILD_GATE", gate.to_str().unwrap())],
    );
    wait_until("`stack ls` to show the first build", DEADLINE, || {
        project
            .ls()
            .iter()
            .any(|d| d["service"] == "hello" && d["state"] == "BUILDING" && d["id"] == "")
    });
    let table = project.stack_ok(&["ls"]);
    assert!(
        table.starts_with("> 0 deployments, 1 building\n") && table.contains("hello (building)"),
        "{table}"
    );
    wait_until("the build script to run", DEADLINE, || {
        !processes_in(&project.path().join("services/hello")).is_empty()
    });

    // Commands that need the running services say so.
    let rollback = project.stack(&["rollback", "hello"]);
    assert_eq!(rollback.code, 1);
    let stderr = &rollback.stderr;
    assert!(
        stderr.contains("is still starting (building hello)")
            && stderr.contains("once it prints `> Ready!`"),
        "{stderr}"
    );
    // `stack logs` reads what an earlier run left on disk; this is the first run, so it too
    // says "still starting".
    let logs = project.stack(&["logs", "hello"]);
    let stderr = &logs.stderr;
    assert!(
        stderr.contains("is still starting (building hello)"),
        "{stderr}"
    );

    // `stack redis` waits a little for the Redis the services will get, then refuses rather
    // than showing another one.
    let keys = project.stack(&["redis", "keys"]);
    assert_eq!(keys.code, 1);
    let stderr = &keys.stderr;
    assert!(
        stderr.contains("is still starting, so the Redis its services use is not known yet"),
        "{stderr}"
    );

    // `stack down` stops it mid-build: cargo and the build script, the managed Redis, the socket.
    let managed: Vec<u64> = fs::read_dir(project.path().join(".stack/pids"))
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    let stopping = Instant::now();
    let stopped = project.stack_ok(&["down"]);
    assert!(stopped.contains("Stopped everything"), "{stopped}");
    let status = up.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", up.output());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
    assert!(!up.output().contains("> Ready!"), "{}", up.output());
    for pid in managed {
        assert!(!alive(pid), "{pid} survived `stack down`");
    }
    let left = processes_in(project.path());
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(!project.path().join(".stack/stack.sock").exists());
    // And the lock is free: a new `stack up` could start (`stack down` says nothing runs).
    assert!(project
        .stack_ok(&["down"])
        .contains("Nothing is running here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_first_build_logs_follow_and_scale_and_alias_wait_for_the_start() {
    require("redis-server");
    let project = Project::hello("follow-first-build");
    // The build waits for a gate, opened once the commands below have landed during it.
    let gate = project.path().join("build-gate");
    let mut up = Up::launch(
        &project,
        &[],
        &[("HELLO_BUILD_GATE", gate.to_str().unwrap())],
    );
    wait_until("`stack ls` to show the first build", DEADLINE, || {
        project.ls().iter().any(|d| d["state"] == "BUILDING")
    });
    let follow = Up::spawn(&project, &["logs", "hello", "-f"], &[]);
    // Recorded for the start, which reads them before it starts the services.
    let scaled = project.stack_ok(&["scale", "hello", "2"]);
    assert!(
        scaled.contains("`hello` will run 2 instances: `stack up` is still building it"),
        "{scaled}"
    );
    let aliased = project.stack_ok(&["alias", "hi.localhost", "hello"]);
    assert!(
        aliased.contains("the alias applies as soon as its services start"),
        "{aliased}"
    );
    let listed = project.ls();
    assert!(
        listed
            .iter()
            .any(|d| d["service"] == "hello" && d["state"] == "BUILDING" && d["wanted"] == 2),
        "{listed:?}"
    );
    wait_until("`stack logs -f` to say it waits", DEADLINE, || {
        follow
            .output()
            .contains("> `stack up` is still starting: following once its services are up")
    });
    fs::write(&gate, "").unwrap();

    up.wait_proxy();
    up.wait_for("> Ready! http://hello-", DEADLINE);
    wait_until(
        "`stack logs -f` to show both instances' first line",
        DEADLINE,
        || {
            let followed = follow.output();
            followed.contains("hello.0 | hello: listening on")
                && followed.contains("hello.1 | hello: listening on")
        },
    );
    assert_eq!(project.live("hello")["wanted"], 2);
    let (status, body, _) = get(&up.client("hi.localhost"), &up.url("hi.localhost", "/")).await;
    assert_eq!((status, body.as_str()), (200, "hello v1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_first_build_stops_it_at_once_and_leaves_nothing() {
    require("redis-server");
    let project = Project::hello("sigterm-first-build");
    let gate = project.path().join("never-opened");
    let mut up = Up::launch(
        &project,
        &[],
        &[("HELLO_BUILD_GATE", gate.to_str().unwrap())],
    );
    wait_until("the build script to run", DEADLINE, || {
        !processes_in(&project.path().join("services/hello")).is_empty()
    });
    let stopping = Instant::now();
    nix::sys::signal::kill(up.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = up.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(143), "{}", up.output());
    assert!(stopping.elapsed() < Duration::from_secs(15));
    assert!(
        up.output().contains("Stopped everything"),
        "{}",
        up.output()
    );
    let left = processes_in(project.path());
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(!project.path().join(".stack/stack.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_build_off_a_terminal_says_how_far_it_is_every_few_seconds() {
    require("redis-server");
    let project = Project::hello("progress-lines");
    let gate = project.path().join("build-gate");
    let mut up = Up::launch(
        &project,
        &["--no-watch"],
        &[("HELLO_BUILD_GATE", gate.to_str().unwrap())],
    );
    // The build is held at its build script: the line says so, with the units done of all.
    let line = up.wait_for("> Building hello: ", DEADLINE);
    let counted = line
        .split("> Building hello: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.split_once('/'))
        .map(|(done, total)| (done.parse::<usize>(), total.parse::<usize>()));
    assert!(
        matches!(counted, Some((Ok(done), Ok(total))) if done >= 1 && done < total),
        "{line}"
    );
    fs::write(&gate, "").unwrap();
    up.wait_ready("hello");
}

/// A declared `build` that says nothing for a while: the periodic line names its command,
/// and the service once.
#[test]
fn a_quiet_build_command_is_named_by_the_periodic_line() {
    require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/index.html", "web\n");
    project.write(
        "stack.toml",
        "[services.web]\nbuild = \"sleep 3.5\"\nrun = \"exec python3 -m http.server $PORT --bind 127.0.0.1\"\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    let line = up.wait_for("> Building web: ", DEADLINE);
    assert_eq!(line.trim_end(), "> Building web: sleep 3.5");
    up.wait_ready("web");
}

/// A `build` that writes into its own directory (a stamp, `dist/`): the save builds once, and
/// what the build wrote does not build again.
#[test]
fn what_a_build_writes_into_its_directory_does_not_build_again() {
    require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/site/version.txt", "one\n");
    project.write(
        "stack.toml",
        "[services.site]\nbuild = \"date +%s%N > stamp.txt; rm -rf dist; mkdir dist; cp version.txt dist/index.html\"\nrun = \"exec python3 -m http.server $PORT --bind 127.0.0.1 --directory dist\"\n",
    );
    let mut up = Up::start(&project, &[]);
    up.wait_for("> Ready! http://site-", BUILD_DEADLINE);
    up.wait_for("Watching for changes", DEADLINE);
    project.write("services/site/version.txt", "two\n");
    up.wait_for_nth("> Ready! http://site-", 2, DEADLINE);
    up.assert_no_more("> Building", 1);
    up.assert_no_more("> Ready! http://site-", 2);
}
