//! The running daemon through the real binary: a `.env` save redeploys with exactly the
//! environment the start assembled (the generated secret, a blank `REDIS_SESSION_URL` meaning
//! the managed Redis), and user input that is no name of anything is refused clearly while the
//! stack keeps serving.

use std::fs;
use std::time::Duration;

use serde_json::Value;

mod support;
use support::{Project, Up};

const DEADLINE: Duration = Duration::from_secs(60);

async fn greeting(up: &Up) -> (u16, Value) {
    greeting_on(up, "greeter.localhost").await
}

async fn greeting_on(up: &Up, host: &str) -> (u16, Value) {
    let response = up
        .client(host)
        .get(up.url(host, "/"))
        .send()
        .await
        .expect("the proxy answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_dotenv_save_with_the_generated_secret_redeploys_and_serves() {
    let project = Project::fixture("needs-secret");
    // No SESSION_SECRET (the project's generated one is used) and a blank Redis URL, as
    // `.env.example` has it (the managed Redis is used).
    let dotenv = project.path().join(".env");
    fs::write(&dotenv, "REDIS_SESSION_URL=\n").unwrap();
    let mut up = Up::start(&project, &["--dotenv"]);
    up.wait_for(
        "SESSION_SECRET is not set: using the project's new secret",
        DEADLINE,
    );
    up.wait_ready("greeter");
    let (status, body) = greeting(&up).await;
    assert_eq!((status, &body["greeting"]), (200, &Value::Null));
    let first = project.live("greeter")["id"].clone();

    fs::write(&dotenv, "REDIS_SESSION_URL=\nGREETING=hello\n").unwrap();
    up.wait_for("swap ", DEADLINE);
    let output = up.output();
    assert!(!output.contains("did not start"), "{output}");
    assert!(!output.contains("SESSION_SECRET is not set\n"), "{output}");
    let (status, body) = greeting(&up).await;
    assert_eq!((status, &body["greeting"]), (200, &Value::from("hello")));
    assert_ne!(
        project.live("greeter")["id"],
        first,
        "a new deployment serves"
    );
}

#[tokio::test]
async fn names_that_are_no_path_are_refused_clearly_and_the_stack_keeps_serving() {
    let project = Project::fixture("needs-secret");
    let mut up = Up::start(&project, &["-e", "SESSION_SECRET=canary-secret-value"]);
    up.wait_ready("greeter");
    // A directory `stack rm ../x` would name if it were taken as a path.
    let outside = project.path().join(".stack/x");
    fs::create_dir_all(&outside).unwrap();
    for args in [
        &["logs", "a b"][..],
        &["logs", "%"],
        &["logs", "a/b?c#d"],
        &["rm", "../x"],
        &["rm", "%2F"],
    ] {
        let run = project.stack(args);
        let stderr = &run.stderr;
        assert_eq!(run.code, 1, "`stack {args:?}`: {stderr}");
        assert!(
            stderr.starts_with("Error! no "),
            "`stack {args:?}`: {stderr}"
        );
        assert!(
            stderr.contains(&format!("`{}`", args[1])),
            "`stack {args:?}`: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "`stack {args:?}`: {stderr}");
    }
    assert!(outside.is_dir(), "`stack rm ../x` removed nothing outside");
    let (status, _) = greeting(&up).await;
    assert_eq!(status, 200);
    let output = up.output();
    assert!(!output.contains("panicked"), "{output}");
}

#[tokio::test]
async fn an_alias_never_takes_over_a_services_a_deployments_or_the_dashboards_host() {
    let project = Project::fixture("needs-secret");
    // Offline: the service under services/ owns its host already.
    let refused = project.stack(&["alias", "greeter.localhost", "greeter"]);
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.starts_with(
            "Error! `greeter.localhost` is the URL of the service `greeter`; an alias cannot take it over"
        ),
        "{}",
        refused.stderr
    );
    let mut up = Up::start(&project, &["-e", "SESSION_SECRET=canary-secret-value"]);
    up.wait_ready("greeter");
    let id = project.live("greeter")["id"].as_str().unwrap().to_string();
    for (host, owner) in [
        (
            format!("{id}.localhost"),
            format!("the URL of the deployment `{id}`"),
        ),
        (
            "GREETER".to_string(),
            "the URL of the service `greeter`".to_string(),
        ),
        (
            "stack.localhost".to_string(),
            "reserved for stack's own dashboard".to_string(),
        ),
    ] {
        let refused = project.stack(&["alias", &host, "greeter"]);
        assert_eq!(refused.code, 1, "{host}: {}", refused.all());
        assert!(
            refused.stderr.contains(&owner),
            "{host}: {}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("Nothing was changed"),
            "{}",
            refused.stderr
        );
    }
    let state = project.state().unwrap_or_default();
    assert!(
        !state.contains(".localhost\""),
        "no alias was stored: {state}"
    );
    // `localhost` is taken literally, and said so.
    let said = project.stack_ok(&["alias", "localhost", "greeter"]);
    assert!(
        said.contains("> Success! localhost now points to greeter"),
        "{said}"
    );
    let (status, _) = greeting_on(&up, "localhost").await;
    assert_eq!(status, 200);
    let (status, _) = greeting(&up).await;
    assert_eq!(status, 200, "the service's own host still reaches it");
}

#[test]
fn a_secret_where_a_long_line_is_cut_is_masked_in_the_log_and_on_the_terminal() {
    let project = Project::fixture("needs-secret");
    let secret = "canary-secret-value-0123456789";
    let mut up = Up::start(
        &project,
        &[
            "--no-watch",
            "-e",
            &format!("SESSION_SECRET={secret}"),
            "-e",
            "PRINT_LONG_LINE=65526",
        ],
    );
    up.wait_ready("greeter");
    up.wait_for("***", DEADLINE);
    let id = project.live("greeter")["id"].as_str().unwrap().to_string();
    let log = fs::read_to_string(project.path().join(format!(".stack/logs/{id}.log"))).unwrap();
    let output = up.output();
    for (name, text) in [("the log file", &log), ("the terminal", &output)] {
        for piece in [secret, &secret[..15], &secret[15..]] {
            assert!(!text.contains(piece), "{name} holds `{piece}`");
        }
    }
}

#[test]
fn logs_rotate_at_their_size_and_stack_logs_reads_across_the_files() {
    let project = Project::fixture("needs-secret");
    let mut up = Up::start(
        &project,
        &[
            "--no-watch",
            "--log-size",
            "256KB",
            "--log-files",
            "3",
            "-e",
            "SESSION_SECRET=canary-secret-value",
            "-e",
            "PRINT_LINES=20000",
        ],
    );
    up.wait_ready("greeter");
    up.wait_for("line 019999", DEADLINE);
    let id = project.live("greeter")["id"].as_str().unwrap().to_string();
    let logs = project.path().join(".stack/logs");
    let mut files: Vec<(String, u64)> = fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&id))
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, entry.metadata().unwrap().len())
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let log = format!("{id}.log");
    assert_eq!(
        names,
        [log.clone(), format!("{log}.1"), format!("{log}.2")],
        "2.4 MB of output in 256 KB files, 3 kept"
    );
    for (name, size) in &files {
        assert!(*size <= 256 * 1024 + 200, "{name}: {size} bytes");
    }
    let last = project.stack_ok(&["logs", "greeter", "-n", "3"]);
    let numbers: Vec<&str> = last
        .lines()
        .filter_map(|line| line.split("line ").nth(1))
        .map(|rest| &rest[..6])
        .collect();
    assert_eq!(numbers, ["019997", "019998", "019999"], "{last}");
    // `--since` reads every kept file, oldest first.
    let since = project.stack_ok(&["logs", "greeter", "--since", "1h"]);
    let kept = since.lines().filter(|line| line.contains("line 0")).count();
    assert!(kept > 4000, "{kept} lines across the files");
    let numbers: Vec<u32> = since
        .lines()
        .filter_map(|line| line.split("line ").nth(1))
        .map(|rest| rest[..6].parse().unwrap())
        .collect();
    assert!(
        numbers.windows(2).all(|pair| pair[0] + 1 == pair[1]),
        "in order, none lost between files"
    );
}
