//! A real nginx serving a config that `stack export nginx` wrote, from a temp prefix.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{listening, require, ChildGuard};

/// Where Debian installs it (`stack export nginx --check` falls back to it too).
pub const NGINX: &str = "/usr/sbin/nginx";

/// nginx serving `config` (its `server` blocks listen on 127.0.0.1:`port`); stopped (SIGTERM
/// to its process group, then SIGKILL) on drop.
pub struct Nginx {
    pub port: u16,
    // Dropped first: nginx stops before its prefix goes.
    child: ChildGuard,
    _prefix: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx and waits until it listens on `port`; fails with its stderr if it exits.
    pub fn start(config: &str, port: u16) -> Nginx {
        require("nginx");
        let prefix = tempfile::tempdir().expect("a temp dir");
        let main = stack::export::nginx::write_main_config(prefix.path(), config)
            .expect("write nginx.conf");
        let mut command = Command::new(NGINX);
        command
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&main)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut command, "nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(port) {
            if let Some(status) = child.exited() {
                let mut stderr = String::new();
                let _ = child
                    .child
                    .stderr
                    .take()
                    .expect("piped stderr")
                    .read_to_string(&mut stderr);
                panic!("nginx exited ({status}):\n{stderr}\nconfig:\n{config}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen in 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            port,
            child,
            _prefix: prefix,
        }
    }
}
