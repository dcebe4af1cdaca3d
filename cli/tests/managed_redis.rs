//! The managed Redis through the real binary: killed, it comes back on its port with the
//! sessions it had written, says so, and shows in `stack ls`; and it is the project owner's
//! alone (a password nobody else can read, 0700 and 0600 files all through `.stack/`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod support;
use support::{require, wait_until, Project, Up};

const DEADLINE: Duration = Duration::from_secs(60);

/// The managed server's port and password, as the project's owner finds them.
fn managed(up: &mut Up, project: &Project) -> (u16, String) {
    let line = up.wait_for("> Redis ready at redis://:***@127.0.0.1:", DEADLINE);
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .expect("the Redis line has a port");
    let password = fs::read_to_string(project.path().join(".stack/redis-password")).unwrap();
    (port, password)
}

fn connect(port: u16, password: Option<&str>) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    };
    redis::Client::open(url)?.get_connection()
}

/// The pid of the process listening on `port` (the managed redis-server).
fn listener_pid(project: &Project) -> i32 {
    let pids = project.path().join(".stack/pids");
    let record = fs::read_dir(pids)
        .unwrap()
        .flatten()
        .find(|entry| {
            fs::read_to_string(entry.path()).is_ok_and(|text| text.lines().nth(1) == Some("redis"))
        })
        .expect("the managed Redis is recorded in .stack/pids");
    record.file_name().to_str().unwrap().parse().unwrap()
}

#[test]
fn a_killed_managed_redis_is_restarted_with_its_sessions_and_shown_in_ls() {
    require("redis-server");
    let project = Project::fixture("needs-secret");
    let mut up = Up::start(
        &project,
        &["--no-watch", "-e", "SESSION_SECRET=canary-secret"],
    );
    let (port, password) = managed(&mut up, &project);
    up.wait_ready("greeter");
    let mut redis = connect(port, Some(&password)).unwrap();
    let session = r#"{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"count":41}"#;
    redis::cmd("SET")
        .arg("sess:written-before")
        .arg(session)
        .exec(&mut redis)
        .unwrap();
    // In the append-only file before the kill (the page cache, which a kill -9 keeps): with
    // `appendfsync everysec` Redis may hold a write back while a slow fsync runs (up to 2 s
    // on a busy disk), so a fixed sleep would not do.
    let aof_dir = project.path().join(".stack/redis/appendonlydir");
    wait_until("the SET in the append-only file", DEADLINE, || {
        fs::read_dir(&aof_dir).is_ok_and(|files| {
            files.flatten().any(|file| {
                fs::read(file.path()).is_ok_and(|bytes| {
                    bytes
                        .windows(b"sess:written-before".len())
                        .any(|window| window == b"sess:written-before")
                })
            })
        })
    });
    let pid = listener_pid(&project);
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    up.wait_for(
        "> Warning! managed Redis: redis-server exited (signal: 9",
        DEADLINE,
    );
    up.wait_for(
        &format!("> Redis is back on port {port} (restart 1)"),
        DEADLINE,
    );
    let back_after = killed.elapsed();
    assert!(back_after < Duration::from_secs(5), "{back_after:?}");
    let listed = project.stack_ok(&["ls"]);
    assert!(
        listed.contains(&format!(
            "> Redis (managed) on port {port}: READY, 1 restart"
        )),
        "{listed}"
    );
    let found = project.stack_ok(&["redis", "get", "written-before"]);
    assert!(found.contains(r#""count": 41"#), "{found}");
    assert_ne!(listener_pid(&project), pid);
    println!("managed Redis back {back_after:?} after kill -9, the session kept");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_managed_redis_and_everything_in_dot_stack_are_the_owners_alone() {
    require("redis-server");
    let project = Project::fixture("needs-secret");
    project.stack_ok(&["alias", "hi.localhost", "greeter"]);
    let mut up = Up::start(&project, &["--no-watch"]);
    let (port, password) = managed(&mut up, &project);
    up.wait_ready("greeter");

    // Without the password, nothing: not a read, not a write.
    let mut stranger = connect(port, None).unwrap();
    for command in [redis::cmd("SCAN").arg(0).clone(), redis::cmd("FLUSHALL")] {
        let refused = command.query::<redis::Value>(&mut stranger).unwrap_err();
        assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    }
    // The password is on no command line.
    let pid = listener_pid(&project);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&password));
    assert!(!up.output().contains(&password), "{}", up.output());

    let stack = project.path().join(".stack");
    assert_eq!(mode(&stack), 0o700);
    // Every directory in it too, each deployment's own included (its copied files keep
    // their modes: a program must stay executable).
    for dir in ["redis", "logs", "pids", "deployments"] {
        assert_eq!(mode(&stack.join(dir)), 0o700, ".stack/{dir}");
    }
    for deployment in fs::read_dir(stack.join("deployments")).unwrap().flatten() {
        assert_eq!(
            mode(&deployment.path()),
            0o700,
            "{}",
            deployment.path().display()
        );
    }
    let mut files = Vec::new();
    let mut dirs = vec![stack.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && entry.file_name() != "deployments" {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    // Redis writes its append-only file as it goes: wait for the first one.
    wait_until("the append-only file", DEADLINE, || {
        stack.join("redis/appendonlydir").is_dir()
    });
    for name in [
        "state.json",
        "session-secret",
        "redis-password",
        "redis/redis.conf",
        "logs/redis.log",
    ] {
        assert!(files.contains(&stack.join(name)), "no .stack/{name}");
    }
    for file in files {
        let name = file.strip_prefix(&stack).unwrap().display().to_string();
        assert_eq!(mode(&file), 0o600, ".stack/{name}");
    }
    for file in fs::read_dir(stack.join("redis/appendonlydir"))
        .unwrap()
        .flatten()
    {
        assert_eq!(mode(&file.path()), 0o600, "{}", file.path().display());
    }
}
