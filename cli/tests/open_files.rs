//! `stack up` at the common soft limit of 1024 open files: it raises its limit to the hard one
//! at start, so a thousand idle keep-alive connections never stop the proxy from answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod support;
use support::{require, Project, Up, STACK};

#[test]
fn eleven_hundred_idle_connections_at_a_1024_soft_limit_do_not_stall_the_proxy() {
    require("redis-server");
    require("prlimit");
    let project = Project::fixture("scaling");
    let hard = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(4)?.parse::<u64>().ok())
        .expect("the hard open-file limit");
    assert!(
        hard >= 4096,
        "the hard limit ({hard}) leaves no room to raise to"
    );
    let mut command = std::process::Command::new("prlimit");
    command
        .arg(format!("--nofile=1024:{hard}"))
        .arg("--")
        .arg(STACK);
    let stack = project.command(&["up", "--port", "0", "web", "--no-watch"]);
    command.args(stack.get_args());
    project.clean_environment(&mut command);
    let mut up = Up::spawn_command(command, "`stack up` at a soft limit of 1024".into());
    up.wait_proxy();
    up.wait_ready("web");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", up.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3)?.parse().ok())
        .unwrap();
    assert_eq!(soft, hard, "stack up raised its soft limit");

    let idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(("127.0.0.1", up.port)).unwrap())
        .collect();
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", up.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        worst = worst.max(started.elapsed());
    }
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    drop(idle);
    println!("1100 idle connections at a 1024 soft limit: worst request {worst:?}");
}
