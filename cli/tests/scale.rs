//! `stack scale` against its limits, through the real binary: a cap it refuses above (starting
//! nothing), a few instances started at a time, a scale-down that never waits for readiness,
//! and a "not ready" error that says it once.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::{require, Project, Up};

const DEADLINE: Duration = Duration::from_secs(60);

/// Node processes running a file of this project's `services/<service>`.
fn processes_of(project: &Path, service: &str) -> usize {
    let dir = project.join(".stack/deployments");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<u32>().is_ok())
                && fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).starts_with("node"))
                && fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| {
                    cwd.starts_with(&dir)
                        && cwd
                            .file_name()
                            .and_then(|name| name.to_str())
                            .is_some_and(|name| name.starts_with(&format!("{service}-")))
                })
        })
        .count()
}

#[test]
fn a_scale_above_the_cap_is_refused_and_starts_nothing() {
    require("redis-server");
    let project = Project::fixture("scaling");
    let mut up = Up::start(&project, &["web", "--no-watch", "--max-instances", "3"]);
    up.wait_ready("web");
    let refused = project.stack(&["scale", "web", "4"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("4 instances is more than the 3 a deployment may run"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--max-instances"),
        "{}",
        refused.stderr
    );
    assert_eq!(project.live("web")["wanted"], 1);
    assert_eq!(processes_of(project.path(), "web"), 1);
    let scaled = project.stack_ok(&["scale", "web", "3"]);
    assert!(scaled.contains("scaled to 3 instances"), "{scaled}");
    assert_eq!(processes_of(project.path(), "web"), 3);
    drop(up);
    // The default cap is 64.
    let mut up = Up::start(&project, &["web", "--no-watch"]);
    up.wait_ready("web");
    let refused = project.stack(&["scale", "web", "100000"]);
    assert!(
        refused
            .stderr
            .contains("100000 instances is more than the 64 a deployment may run"),
        "{}",
        refused.stderr
    );
}

#[test]
fn instances_start_a_few_at_a_time_and_a_scale_down_never_waits() {
    require("redis-server");
    let project = Project::fixture("scaling");
    let mut up = Up::launch(
        &project,
        &["hang", "--no-watch", "--ready-timeout", "2s"],
        &[],
    );
    up.wait_proxy();
    wait_for_processes(&project, "hang", 1);
    // Ten instances that never get ready: at most four are starting at any moment.
    let scaling = {
        let command = project.command(&["scale", "hang", "10"]);
        std::thread::spawn(move || {
            let mut command = command;
            command.output().unwrap()
        })
    };
    let mut most = 0;
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(4) {
        most = most.max(processes_of(project.path(), "hang"));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(most, 4, "the most instances starting at once");
    let scaled = scaling.join().unwrap();
    assert_eq!(scaled.status.code(), Some(1), "none of them gets ready");
    // Scaling down answers at once, though no instance is ready.
    let started = Instant::now();
    let down = project.stack_ok(&["scale", "hang", "1"]);
    assert!(down.contains("scaled to 1 instance"), "{down}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The not-ready error says what happened once, with the program's own last line.
    let error = up.wait_for("is not ready after", DEADLINE);
    assert_eq!(error.matches("not ready").count(), 1, "{error}");
    let output = up.output();
    let reason = output
        .lines()
        .skip_while(|line| !line.contains("is not ready after"))
        .take_while(|line| !line.contains("The other services keep running"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(reason.matches("within 2s").count(), 1, "{reason}");
    assert!(reason.contains("hang: waiting forever"), "{reason}");
    assert!(!reason.contains("[stack]"), "{reason}");

    // After restarts too: a reason never carries the notes about the attempts before it.
    support::wait_until("two restarts", DEADLINE, || {
        project.live("hang")["instances"][0]["restarts"].as_u64() >= Some(2)
    });
    let again = project.stack(&["scale", "hang", "2"]);
    assert_eq!(again.code, 1, "{}", again.all());
    assert_eq!(
        again.stderr.matches("within 2s").count(),
        1,
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("[stack]"), "{}", again.stderr);
    let id = project.live("hang")["id"].as_str().unwrap().to_string();
    let log = fs::read_to_string(project.path().join(format!(".stack/logs/{id}.log"))).unwrap();
    for note in log.lines().filter(|line| line.contains("[stack]")) {
        assert!(note.matches("within 2s").count() <= 1, "{note}");
        assert!(!note.contains("last lines"), "{note}");
    }
}

fn wait_for_processes(project: &Project, service: &str, n: usize) {
    support::wait_until(&format!("{n} {service} process(es)"), DEADLINE, || {
        processes_of(project.path(), service) >= n
    });
}

#[tokio::test]
async fn a_hung_instance_leaves_the_rotation_after_one_timeout_and_comes_back_when_it_answers() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    require("redis-server");
    let project = Project::fixture("scaling");
    let mut up = Up::start(&project, &["web", "--no-watch", "--upstream-timeout", "2s"]);
    up.wait_ready("web");
    project.stack_ok(&["scale", "web", "2"]);
    let live = project.live("web");
    let pids: Vec<i32> = live["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["pid"].as_i64().unwrap() as i32)
        .collect();
    let client = up.client("web.localhost");
    let url = up.url("web.localhost", "/");
    let answer = |client: reqwest::Client, url: String| async move {
        match client.get(&url).send().await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap()),
            Err(error) => panic!("the proxy did not answer: {error}"),
        }
    };
    // `npm start` runs node under npm: stop the whole group, as a hung process would be.
    kill(Pid::from_raw(-pids[1]), Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    let mut failed = 0;
    let mut first_good_streak = None;
    for n in 0..20 {
        let (status, body) = answer(client.clone(), url.clone()).await;
        if status == 504 {
            failed += 1;
        } else {
            assert_eq!(status, 200, "{body}");
            if n >= 2 {
                first_good_streak.get_or_insert(stopped.elapsed());
            }
        }
    }
    let left_after = first_good_streak.expect("requests answered once it left");
    assert_eq!(
        failed, 1,
        "only the request that met the hung instance fails"
    );
    up.wait_for(
        "did not answer the proxy in time: out of rotation",
        DEADLINE,
    );
    let listed = project.live("web");
    assert_eq!(listed["ready"], 1, "{listed}");
    assert_eq!(listed["instances"][1]["state"], "UNRESPONSIVE", "{listed}");

    kill(Pid::from_raw(-pids[1]), Signal::SIGCONT).unwrap();
    up.wait_for("answers again: back in rotation", DEADLINE);
    assert_eq!(project.live("web")["ready"], 2);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = answer(client.clone(), url.clone()).await;
        assert_eq!(status, 200);
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "both instances answer again: {seen:?}");
    println!("a SIGSTOPped instance left the rotation {left_after:?} after the stop, {failed} request failed");
}
