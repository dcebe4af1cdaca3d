//! `stack restart` through the real binary, with real Python and shell processes: a single
//! instance and a scaled service get new processes under load with no failed request, one
//! instance alone by its log name (`web.1`), a new process that fails leaves the old one
//! serving, an old one killed while its replacement starts leaves the rotation at once, and a
//! CRASHED worker and a completed one-shot start again.

mod support;

use std::path::Path;

use nix::sys::signal::Signal;
use support::{Project, Up, COMMAND_DEADLINE, SLOW_SERVICE};

/// `web`: healthy 0.4 s after its start (so a restart's new process takes a while), it
/// answers with its pid, and it cannot start while `fail_file` exists.
fn web_project(fail_file: &Path) -> Project {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    project.write(
        "stack.toml",
        &format!(
            "[services.web]\nrun = [\"python3\", \"app.py\"]\nenv = {{ FAIL_FILE = \"{}\", HEALTHY_AFTER = \"0.4\", LOG_REQUESTS = \"0\" }}\nhealth = {{ http = \"/healthz\", interval = \"200ms\" }}\nstop_timeout = \"2s\"\n",
            fail_file.display()
        ),
    );
    project
}

/// The pid of each instance of `service`, by instance number.
fn pids(project: &Project, service: &str) -> Vec<u64> {
    let live = project.live(service);
    let mut instances: Vec<(u64, u64)> = live["instances"]
        .as_array()
        .map(|instances| {
            instances
                .iter()
                .map(|instance| {
                    (
                        instance["number"].as_u64().unwrap_or_default(),
                        instance["pid"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    instances.sort_unstable();
    instances.into_iter().map(|(_, pid)| pid).collect()
}

/// The load of [`support::under_load`] on `web.localhost`: the failed requests, and every
/// pid that answered.
fn under_load(port: u16, during: impl FnOnce()) -> (usize, Vec<String>) {
    let (failed, seen) = support::under_load(port, "web.localhost", during);
    let mut answered: Vec<String> = seen.into_iter().flatten().collect();
    answered.sort_unstable();
    answered.dedup();
    (failed, answered)
}

#[test]
fn restart_gives_new_processes_one_instance_at_a_time_with_no_failed_request() {
    let temp = tempfile::tempdir().unwrap();
    let fail_file = temp.path().join("fail");
    let project = web_project(&fail_file);
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");

    // One instance: the new process is ready before the old one drains.
    let before = pids(&project, "web");
    let (failed, answered) = under_load(up.port, || {
        let out = project.stack_ok(&["restart", "web"]);
        assert!(out.contains("Restarted web.0 (web-"), "{out}");
    });
    let after = pids(&project, "web");
    assert_eq!(failed, 0, "{}", up.output());
    assert_ne!(before, after, "{}", up.output());
    let mut both = vec![before[0].to_string(), after[0].to_string()];
    both.sort_unstable();
    assert_eq!(answered, both, "{}", up.output());
    assert_eq!(project.live("web")["instances"][0]["restarts"], 1);
    up.wait_for(
        "web.0 | [stack] restarting on request: a new process starts, then the old one drains (restart 1)",
        COMMAND_DEADLINE,
    );
    up.wait_for(
        &format!(
            "web.0 | [stack] pid {} serves; pid {} stopped",
            after[0], before[0]
        ),
        COMMAND_DEADLINE,
    );
    assert!(!support::alive(before[0]), "the old process still runs");

    // Two instances, one at a time; then one of them alone, by the name its log lines carry.
    project.stack_ok(&["scale", "web", "2"]);
    let before = pids(&project, "web");
    let (failed, _) = under_load(up.port, || {
        let out = project.stack_ok(&["restart", "web"]);
        assert!(out.contains("Restarted web.0, web.1 (web-"), "{out}");
    });
    assert_eq!(failed, 0, "{}", up.output());
    let after = pids(&project, "web");
    assert!(
        before.iter().all(|pid| !after.contains(pid)),
        "{before:?} {after:?}"
    );
    let out = project.stack_ok(&["restart", "web.1"]);
    assert!(out.contains("Restarted web.1 (web-"), "{out}");
    let again = pids(&project, "web");
    assert_eq!(again[0], after[0], "web.0 was left alone");
    assert_ne!(again[1], after[1]);
    // The same name gives that instance's logs alone, live and (at the end) from the files.
    let own_logs = |project: &Project| {
        let logs = project.stack_ok(&["logs", "web.1", "-n", "1000"]);
        assert!(
            logs.contains("web.1 | [stack] restarting on request"),
            "{logs}"
        );
        assert!(
            logs.lines().all(|line| line.starts_with("web.1 | ")),
            "{logs}"
        );
    };
    own_logs(&project);
    // An instance that neither runs nor ever wrote a line is named as a mistake.
    project
        .stack(&["logs", "web.7"])
        .assert_refused(&["Error! `web` has no instance 7", "It runs web.0, web.1"]);

    // A new process that cannot start: the restart fails, saying why, and the old one serves
    // (`stack logs web.0 -f` follows that instance's lines only).
    let mut follow = Up::spawn(&project, &["logs", "web.0", "-f", "-n", "1000"], &[]);
    std::fs::write(&fail_file, "").unwrap();
    let (failed, answered) = under_load(up.port, || {
        project.stack(&["restart", "web.0"]).assert_refused(&[
            "Error! web.0 did not restart: exited before it was ready",
            "keeps serving",
        ]);
    });
    assert_eq!(failed, 0, "{}", up.output());
    assert_eq!(pids(&project, "web"), again, "{}", up.output());
    assert!(answered.contains(&again[0].to_string()));
    up.wait_for("web.0 | refusing to start", COMMAND_DEADLINE);
    let followed = follow.wait_for("web.0 | refusing to start", COMMAND_DEADLINE);
    assert!(followed.starts_with("web.0 | "), "{followed}");
    let followed = follow.output();
    assert!(
        followed.lines().all(|line| line.starts_with("web.0 | ")),
        "{followed}"
    );
    drop(follow);
    up.wait_for(
        &format!("[stack] the new process exited before it was ready (exit status: 3); pid {} keeps serving", again[0]),
        COMMAND_DEADLINE,
    );

    // What is not there is refused.
    for (target, error) in [
        (
            "web.7",
            "Error! `web` has no instance 7\nIt runs web.0, web.1;",
        ),
        ("nope", "Error! no service or deployment named `nope`"),
    ] {
        project.stack(&["restart", target]).assert_refused(&[error]);
    }
    up.stop(Signal::SIGINT);
    own_logs(&project);
    project
        .stack(&["restart", "web"])
        .assert_refused(&["nothing to restart"]);
}

#[test]
fn restart_brings_back_a_crashed_worker_and_runs_a_completed_one_shot_again() {
    let temp = tempfile::tempdir().unwrap();
    let marker = temp.path().join("ready");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write(
        "services/queue/work.sh",
        "if [ -f \"$MARKER\" ]; then echo consuming; exec sleep 600; fi\necho no queue yet; exit 1\n",
    );
    project.write("services/seed/seed.sh", "echo seeded\n");
    project.write(
        "stack.toml",
        &format!(
            "[services.queue]\nrun = \"sh work.sh\"\nkind = \"worker\"\nrestart = \"never\"\nenv = {{ MARKER = \"{}\" }}\n\n[services.seed]\nrun = \"sh seed.sh\"\nkind = \"worker\"\nrestart = \"on-failure\"\n",
            marker.display()
        ),
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_for(
        "queue.0 | [stack] exited (exit status: 1); not restarting",
        COMMAND_DEADLINE,
    );
    up.wait_for("seed.0 | [stack] exited 0: completed", COMMAND_DEADLINE);
    support::wait_until("queue to show CRASHED", COMMAND_DEADLINE, || {
        project.live("queue")["state"] == "CRASHED"
    });

    // What it waited for is there now: a restart starts it again.
    std::fs::write(&marker, "").unwrap();
    let out = project.stack_ok(&["restart", "queue"]);
    assert!(out.contains("Restarted queue.0 (queue-"), "{out}");
    up.wait_for(
        "queue.0 | [stack] starting again on request (restart 1)",
        COMMAND_DEADLINE,
    );
    up.wait_for("queue.0 | consuming", COMMAND_DEADLINE);
    assert_ne!(project.live("queue")["state"], "CRASHED");
    assert_eq!(project.live("queue")["instances"][0]["restarts"], 1);

    // A one-shot that completed runs again.
    let out = project.stack_ok(&["restart", "seed"]);
    assert!(out.contains("Restarted seed.0 (seed-"), "{out}");
    up.wait_for_nth("seed.0 | seeded", 2, COMMAND_DEADLINE);
    up.wait_for_nth("seed.0 | [stack] exited 0: completed", 2, COMMAND_DEADLINE);
    up.stop(Signal::SIGINT);
}

#[test]
fn an_old_process_that_dies_while_its_replacement_starts_leaves_the_rotation_at_once() {
    support::require("python3");
    let project = Project::empty().with_env("SESSION_SECRET", "test-secret");
    project.write("services/web/app.py", SLOW_SERVICE);
    // Healthy 2 s after its start: a window to kill the old process in.
    project.write(
        "stack.toml",
        "[services.web]\nrun = [\"python3\", \"app.py\"]\nenv = { HEALTHY_AFTER = \"2\", LOG_REQUESTS = \"0\" }\nhealth = { http = \"/healthz\", interval = \"200ms\" }\n",
    );
    let mut up = Up::start(&project, &["--no-watch"]);
    up.wait_ready("web");
    let before = pids(&project, "web");
    std::thread::scope(|scope| {
        let restart = scope.spawn(|| project.stack_ok(&["restart", "web"]));
        up.wait_for(
            "web.0 | [stack] restarting on request: a new process starts",
            COMMAND_DEADLINE,
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(before[0]).unwrap()),
            Signal::SIGKILL,
        )
        .unwrap();
        up.wait_for(
            &format!("web.0 | [stack] pid {} exited (signal: 9 (SIGKILL)) while its new process starts: out of rotation until that one is ready", before[0]),
            COMMAND_DEADLINE,
        );
        assert_ne!(project.live("web")["state"], "READY", "{}", up.output());
        let out = restart.join().unwrap();
        assert!(out.contains("Restarted web.0 (web-"), "{out}");
    });
    let after = pids(&project, "web");
    assert_ne!(after, before);
    up.wait_for(
        &format!("web.0 | [stack] pid {} serves", after[0]),
        COMMAND_DEADLINE,
    );
    let reply = support::raw_http::request(up.port, "GET", "/", &[("Host", "web.localhost")]);
    assert_eq!((reply.status, reply.body), (200, after[0].to_string()));
    assert_eq!(project.live("web")["state"], "READY");
    up.stop(Signal::SIGINT);
}
