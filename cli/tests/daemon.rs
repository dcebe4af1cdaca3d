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
    let response = up
        .client("greeter.localhost")
        .get(up.url("greeter.localhost", "/"))
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
