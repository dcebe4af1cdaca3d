//! `stack init`, run as the real binary into temp directories: each template's files are
//! written, a second `stack init` refuses to overwrite (and writes nothing), `--force` does
//! overwrite, and the Rust project builds on its own (one `cargo build`, with the target dir
//! shared under the workspace's `target/init-test` so the cache is reused between runs).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

mod support;
use support::{free_port, raw_http, require, workspace, Nginx, Project, Up};

/// Every file under `dir`, relative, sorted (skipping build output).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| {
                    ["target", "node_modules", ".venv", "__pycache__"]
                        .iter()
                        .any(|skipped| n == *skipped)
                }) {
                    continue;
                }
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn rust_template_writes_the_services_refuses_to_overwrite_and_builds() {
    let temp = Project::empty();
    let run = temp.stack_without_cwd(&["init", "demo"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let project = temp.path().join("demo");

    // The services are this repository's, file for file and byte for byte.
    let services = files_under(&workspace().join("services"));
    assert!(services.contains(&"writer/Cargo.toml".to_string()));
    for file in &services {
        let copied = fs::read(project.join("services").join(file))
            .unwrap_or_else(|_| panic!("services/{file} was not written"));
        assert_eq!(
            copied,
            fs::read(workspace().join("services").join(file)).unwrap(),
            "services/{file} differs from the repository's"
        );
    }
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "aliases.json",
        ".env.example",
        ".gitignore",
        "README.md",
    ] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        fs::read_to_string(workspace().join("aliases.json")).unwrap()
    );
    let gitignore = fs::read_to_string(project.join(".gitignore")).unwrap();
    for wanted in [".env", ".stack/", "target/", "node_modules/"] {
        assert!(gitignore.lines().any(|l| l == wanted), "{gitignore}");
    }
    // Standalone: nothing points back into this repository.
    let manifest = fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(".."), "{manifest}");
    assert!(manifest.contains("[workspace.dependencies]"), "{manifest}");
    // Members by name: a non-Rust directory under services/ must not break cargo.
    assert!(
        manifest
            .contains(r#"members = ["services/reader", "services/session", "services/writer"]"#),
        "{manifest}"
    );
    // The two next commands, after a `cd`.
    assert!(
        run.stdout.ends_with(
            "    cd demo\n    stack alias counter-demo.localhost --rules aliases.json\n    stack up\n"
        ),
        "{}",
        run.stdout
    );

    // A second init refuses, names the files, and changes nothing.
    fs::write(
        project.join("aliases.json"),
        "{\"rules\":[{\"dest\":\"mine\"}]}",
    )
    .unwrap();
    let before = files_under(&project);
    let run = temp.stack_without_cwd(&["init", "demo"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.starts_with("Error! ")
            && run
                .stderr
                .contains("already exist in `demo`:\n  .env.example\n"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\n  aliases.json\n"), "{}", run.stderr);
    assert!(
        run.stderr.contains("\n  services/writer/Cargo.toml\n"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(files_under(&project), before);
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        "{\"rules\":[{\"dest\":\"mine\"}]}"
    );

    // `--force` overwrites.
    let run = temp.stack_without_cwd(&["init", "demo", "--force"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("overwritten"), "{}", run.stdout);
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        fs::read_to_string(workspace().join("aliases.json")).unwrap()
    );

    // The project builds on its own. The target dir is shared between runs of this test (and
    // outside the project, so the tree check above is unaffected).
    let target_dir = workspace().join("target/init-test");
    let output = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build in the new project failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for binary in ["writer", "reader"] {
        assert!(
            target_dir.join("debug").join(binary).is_file(),
            "{binary} was not built"
        );
    }
}

#[test]
fn node_template_writes_the_node_services() {
    let temp = Project::empty();
    let run = temp.stack_without_cwd(&["init", "--template", "node"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Initialised in the current directory: no `cd` to print.
    assert!(!run.stdout.contains("cd "), "{}", run.stdout);
    assert!(run.stdout.contains("stack up"), "{}", run.stdout);

    let source = workspace().join("templates/node");
    let expected = files_under(&source);
    assert!(expected.contains(&"services/writer/index.js".to_string()));
    let written = files_under(temp.path());
    for file in &expected {
        assert!(written.contains(file), "{file} not written: {written:?}");
        if file != ".gitignore" {
            assert_eq!(
                fs::read(temp.path().join(file)).unwrap(),
                fs::read(source.join(file)).unwrap(),
                "{file}"
            );
        }
    }
    assert!(!written.iter().any(|f| f.contains("node_modules")));
    let gitignore = fs::read_to_string(temp.path().join(".gitignore")).unwrap();
    for wanted in [".env", ".stack/", "target/", "node_modules/"] {
        assert!(gitignore.lines().any(|l| l == wanted), "{gitignore}");
    }
    let example = fs::read_to_string(temp.path().join(".env.example")).unwrap();
    assert!(example.contains("SESSION_SECRET="));

    let again = temp.stack_without_cwd(&["init", "--template", "node"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("\n  package.json\n"),
        "{}",
        again.stderr
    );
}

#[test]
fn bad_arguments() {
    let temp = Project::empty();
    let run = temp.stack_without_cwd(&["init", "--template", "go"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    temp.write("taken", "a file");
    let run = temp.stack_without_cwd(&["init", "taken"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("Error! `taken` exists and is not a directory"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// From `stack init` to a running demo, and to a production nginx that serves it the same way.

/// A GET with `Host: host` (and `Cookie: cookie`): (status, `Set-Cookie` value if any, body).
fn get(port: u16, host: &str, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut headers = vec![("Host", host)];
    headers.extend(cookie.map(|cookie| ("Cookie", cookie)));
    let reply = raw_http::request(port, "GET", path, &headers);
    let set_cookie = reply
        .header("set-cookie")
        .and_then(|value| value.split(';').next())
        .map(str::to_owned);
    (reply.status, set_cookie, reply.body)
}

/// The demo flow through `port` with `Host: counter-demo.localhost`: the reader refuses a
/// stranger, the writer logs in and counts, the reader sees the same session, logout ends it.
fn demo_flow(port: u16) {
    let host = "counter-demo.localhost";
    let (status, _, body) = get(port, host, "/", None);
    assert_eq!(status, 403, "{body}");
    let (status, cookie, body) = get(port, host, "/login", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("you are now logged in"), "{body}");
    let cookie = cookie.expect("login sets the session cookie");
    assert!(cookie.starts_with("connect.sid=s%3A"), "{cookie}");
    for expected in 1..=2 {
        let (status, _, body) = get(port, host, "/increment", Some(&cookie));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"count\":{expected}")), "{body}");
    }
    let (status, _, body) = get(port, host, "/", Some(&cookie));
    assert_eq!(
        status, 200,
        "the reader shares the writer's session: {body}"
    );
    assert!(body.contains("\"count\":2"), "{body}");
    let (status, _, body) = get(port, host, "/logout", Some(&cookie));
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(port, host, "/", Some(&cookie));
    assert_eq!(status, 403);
}

#[test]
fn initialised_project_serves_the_demo_under_stack_up_and_through_the_exported_nginx() {
    require("nginx");
    require("redis-server");
    let project = Project::empty()
        // The services build where the Rust template test builds them: the cache is shared.
        .with_target_dir(workspace().join("target/init-test"));
    assert_eq!(project.stack_without_cwd(&["init"]).code, 0);
    // A Node service beside the Rust ones never breaks their cargo build.
    project.write(
        "services/hello/package.json",
        r#"{"name": "hello", "private": true, "scripts": {"start": "node index.js"}}"#,
    );
    project.write(
        "services/hello/index.js",
        "require('http').createServer((q, s) => s.end('hello')).listen(+process.env.PORT, '127.0.0.1');\n",
    );
    let run =
        project.stack_without_cwd(&["alias", "counter-demo.localhost", "--rules", "aliases.json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let secret = "canary-secret-5c1d2e";
    let session_secret = format!("SESSION_SECRET={secret}");
    // Waits (up to 10 minutes: the first build) for the proxy's address.
    let mut up = Up::start(&project, &["--no-watch", "-e", &session_secret]);
    let port = up.port;
    let minutes = Duration::from_secs(600);
    // Both services answer through the alias (polled: the `> Ready!` lines are up's to test).
    let deadline = Instant::now() + minutes;
    loop {
        let reader = get(port, "counter-demo.localhost", "/", None).0;
        let writer = get(port, "counter-demo.localhost", "/logout", None).0;
        if reader == 403 && writer == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not come up ({reader}, {writer}):\n{}",
            up.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    demo_flow(port);
    up.wait_for("> Ready! http://hello-", minutes);

    // The export while `stack up` runs points at its instances.
    let run = project.stack_without_cwd(&[
        "export",
        "nginx",
        "counter-demo.localhost",
        "-o",
        "counter-demo.conf",
        "--check",
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("written to `counter-demo.conf` (3 upstreams, checked by `nginx -t`)"),
        "{}",
        run.stdout
    );
    let config = fs::read_to_string(project.path().join("counter-demo.conf")).unwrap();
    assert!(
        config.starts_with("# Generated by stack ")
            && config.contains("from the alias `counter-demo.localhost` (aliases.json, 5 rules)"),
        "{config}"
    );
    assert!(
        config.contains("the instances of the `stack up` that was running"),
        "{config}"
    );
    let ls = project.stack_without_cwd(&["ls", "--json"]);
    let deployments: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    // The alias's services (not `hello`, which no rule names).
    let aliased = deployments
        .as_array()
        .unwrap()
        .iter()
        .filter(|deployment| deployment["service"] != "hello");
    for deployment in aliased {
        for instance in deployment["instances"].as_array().unwrap() {
            let port = instance["port"].as_u64().unwrap();
            assert!(
                config.contains(&format!("    server 127.0.0.1:{port};")),
                "instance port {port} not in:\n{config}"
            );
        }
    }

    // The same flow through a real nginx serving the exported file (only `listen` changed,
    // as an operator would).
    let nginx_port = free_port();
    let config = config.replace(
        "    listen 80;",
        &format!("    listen 127.0.0.1:{nginx_port};"),
    );
    let nginx = Nginx::start(&config, nginx_port);
    demo_flow(nginx.port);
    drop(nginx);

    // Stopped cleanly, and the secret never showed in anything stack printed.
    let output = up.stop(Signal::SIGTERM);
    assert!(output.contains("Stopping"), "{output}");
    assert!(!output.contains(secret), "the secret leaked:\n{output}");
}
