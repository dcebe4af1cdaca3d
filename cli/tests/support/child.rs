//! A child process that a test starts and that must not outlive it, pass or fail.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A child in a process group of its own. On drop, if it still runs: its stop signal (SIGTERM
/// unless [`ChildGuard::stopped_by`] says otherwise) to the group, SIGKILL to the group after
/// the grace period.
pub struct ChildGuard {
    pub child: Child,
    stop_signal: Signal,
    grace: Duration,
}

impl ChildGuard {
    /// Spawns `command` in a new process group (so a stop reaches what it started in it).
    pub fn spawn(command: &mut Command, what: &str) -> ChildGuard {
        std::os::unix::process::CommandExt::process_group(command, 0);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
        ChildGuard {
            child,
            stop_signal: Signal::SIGTERM,
            grace: Duration::from_secs(5),
        }
    }

    /// Stopped on drop with `signal`, and killed if it still runs `grace` later.
    pub fn stopped_by(mut self, signal: Signal, grace: Duration) -> ChildGuard {
        self.stop_signal = signal;
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Its exit status if it has exited (and is reaped now).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for a child")
    }

    /// Waits up to `timeout` for it to exit on its own; `None` if it still runs.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `signal` to its group; SIGKILL to the group if it has not exited `grace` later.
    pub fn stop(&mut self, signal: Signal, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = killpg(self.pid(), signal);
        if self.exit_within(grace).is_some() {
            return;
        }
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(self.stop_signal, self.grace);
    }
}
