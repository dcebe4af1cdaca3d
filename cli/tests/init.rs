//! `stack init`, run as the real binary into temp directories: each template's files are
//! written, a second `stack init` refuses to overwrite (and writes nothing), `--force` does
//! overwrite, and the Rust project builds on its own (one `cargo build`, with the target dir
//! shared under the workspace's `target/init-test` so the cache is reused between runs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn stack(cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_stack"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("run the stack binary");
    let dir = cwd.display().to_string();
    Run {
        code: output.status.code().expect("stack exits, not killed"),
        stdout: String::from_utf8(output.stdout)
            .unwrap()
            .replace(&dir, "[DIR]"),
        stderr: String::from_utf8(output.stderr)
            .unwrap()
            .replace(&dir, "[DIR]"),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Every file under `dir`, relative, sorted (skipping build output).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n == "target" || n == "node_modules")
                {
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
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "demo"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let project = temp.path().join("demo");

    // The services are this repository's, file for file and byte for byte.
    let services = files_under(&repo_root().join("services"));
    assert!(services.contains(&"writer/Cargo.toml".to_string()));
    for file in &services {
        let copied = fs::read(project.join("services").join(file))
            .unwrap_or_else(|_| panic!("services/{file} was not written"));
        assert_eq!(
            copied,
            fs::read(repo_root().join("services").join(file)).unwrap(),
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
        fs::read_to_string(repo_root().join("aliases.json")).unwrap()
    );
    let gitignore = fs::read_to_string(project.join(".gitignore")).unwrap();
    for wanted in [".env", ".stack/", "target/", "node_modules/"] {
        assert!(gitignore.lines().any(|l| l == wanted), "{gitignore}");
    }
    // Standalone: nothing points back into this repository.
    let manifest = fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains(".."), "{manifest}");
    assert!(manifest.contains("[workspace.dependencies]"), "{manifest}");
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
    let run = stack(temp.path(), &["init", "demo"]);
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
    let run = stack(temp.path(), &["init", "demo", "--force"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("overwritten"), "{}", run.stdout);
    assert_eq!(
        fs::read_to_string(project.join("aliases.json")).unwrap(),
        fs::read_to_string(repo_root().join("aliases.json")).unwrap()
    );

    // The project builds on its own. The target dir is shared between runs of this test (and
    // outside the project, so the tree check above is unaffected).
    let target_dir = repo_root().join("target/init-test");
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
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "--template", "node"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    // Initialised in the current directory: no `cd` to print.
    assert!(!run.stdout.contains("cd "), "{}", run.stdout);
    assert!(run.stdout.contains("stack up"), "{}", run.stdout);

    let source = repo_root().join("templates/node");
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

    let again = stack(temp.path(), &["init", "--template", "node"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("\n  package.json\n"),
        "{}",
        again.stderr
    );
}

#[test]
fn bad_arguments() {
    let temp = tempfile::tempdir().unwrap();
    let run = stack(temp.path(), &["init", "--template", "go"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    fs::write(temp.path().join("taken"), "a file").unwrap();
    let run = stack(temp.path(), &["init", "taken"]);
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

/// A raw HTTP/1.1 GET: (status, `Set-Cookie` value if any, body).
fn get(port: u16, host: &str, path: &str, cookie: Option<&str>) -> (u16, Option<String>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let set_cookie = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().split(';').next().unwrap().to_string());
    // Bodies here are small and not chunked by the services; nginx may chunk: strip sizes.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n")
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, part)| part)
            .collect()
    } else {
        body.to_string()
    };
    (status, set_cookie, body)
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

/// `stack up` in its own process group; SIGTERM to the group (then SIGKILL) on drop.
struct StackUp {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StackUp {
    fn start(project: &Path, secret: &str) -> StackUp {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_stack"));
        command
            .args(["up", "--port", "0", "--no-watch", "-e"])
            .arg(format!("SESSION_SECRET={secret}"))
            .current_dir(project)
            .env("NO_COLOR", "1")
            .env("CARGO_TARGET_DIR", repo_root().join("target/init-test"))
            .env_remove("REDIS_SESSION_URL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("start stack up");
        let (sender, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        StackUp {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// A line satisfying `wanted`, printed already or within `timeout`.
    fn wait_for(&mut self, timeout: std::time::Duration, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "stack up did not print the expected line in {timeout:?}; output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl StackUp {
    /// SIGTERM to the group, SIGKILL after 15 s; then everything it printed.
    fn stop(&mut self) -> String {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut exited = false;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if !exited {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }
}

impl Drop for StackUp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

#[test]
fn initialised_project_serves_the_demo_under_stack_up_and_through_the_exported_nginx() {
    const NGINX: &str = "/usr/sbin/nginx";
    assert!(
        Path::new(NGINX).is_file(),
        "{NGINX} is missing: install it with `apt-get install nginx-light`"
    );
    assert!(
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
        "redis-server is missing: install it with `apt-get install redis-server`"
    );
    let temp = tempfile::tempdir().unwrap();
    let project = temp.path();
    assert_eq!(stack(project, &["init"]).code, 0);
    let run = stack(
        project,
        &["alias", "counter-demo.localhost", "--rules", "aliases.json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);

    let secret = "canary-secret-5c1d2e";
    let mut up = StackUp::start(project, secret);
    let minutes = std::time::Duration::from_secs(600);
    let listening = up.wait_for(minutes, |line| line.contains("Proxy listening on"));
    let port: u16 = listening
        .rsplit(':')
        .next()
        .and_then(|port| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening:?}"));
    // Both services answer through the alias (polled: the `> Ready!` lines are up's to test).
    let deadline = std::time::Instant::now() + minutes;
    loop {
        let reader = get(port, "counter-demo.localhost", "/", None).0;
        let writer = get(port, "counter-demo.localhost", "/logout", None).0;
        if reader == 403 && writer == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not come up ({reader}, {writer}):\n{}",
            up.seen.join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    demo_flow(port);

    // The export while `stack up` runs points at its instances.
    let run = stack(
        project,
        &[
            "export",
            "nginx",
            "counter-demo.localhost",
            "-o",
            "counter-demo.conf",
            "--check",
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("written to `counter-demo.conf` (2 upstreams, checked by `nginx -t`)"),
        "{}",
        run.stdout
    );
    let config = fs::read_to_string(project.join("counter-demo.conf")).unwrap();
    assert!(
        config.starts_with("# Generated by stack ")
            && config.contains("from the alias `counter-demo.localhost` (aliases.json, 4 rules)"),
        "{config}"
    );
    assert!(
        config.contains("the instances of the `stack up` that was running"),
        "{config}"
    );
    let ls = stack(project, &["ls", "--json"]);
    let deployments: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    for deployment in deployments.as_array().unwrap() {
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
    let nginx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config.replace(
        "    listen 80;",
        &format!("    listen 127.0.0.1:{nginx_port};"),
    );
    let prefix = tempfile::tempdir().unwrap();
    let main = stack::export::nginx::write_main_config(prefix.path(), &config).unwrap();
    let mut nginx = {
        use std::os::unix::process::CommandExt;
        Command::new(NGINX)
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&main)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start nginx")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", nginx_port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not listen");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let through_nginx = std::panic::catch_unwind(|| demo_flow(nginx_port));
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(nginx.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = nginx.wait();
    if let Err(panic) = through_nginx {
        std::panic::resume_unwind(panic);
    }

    // Stopped cleanly, and the secret never showed in anything stack printed.
    let output = up.stop();
    assert!(output.contains("Stopping"), "{output}");
    assert!(!output.contains(secret), "the secret leaked:\n{output}");
}
