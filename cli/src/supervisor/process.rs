//! The only place in stack that starts processes (services, Redis, and through [`spawn_tool`]
//! the build tools). A child runs as the leader of its own process group, gets SIGKILL when
//! `stack up` dies (Linux parent-death signal), and is stopped with SIGTERM to the whole group
//! then SIGKILL after a grace period. Every group is recorded in `.stack/pids/` ([`pids_dir`])
//! while it runs, so a `stack up` that was killed can be cleaned up by the next.
//!
//! This module knows nothing about deployments, readiness or restarts; it runs one command.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
}

/// What to run: the program, its arguments, its directory and its whole environment (the
/// caller's environment is NOT inherited implicitly; `env` already holds every layer).
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Who this is, for the pid record and logs (`writer-abcdefghij.0`, `redis`).
    pub label: String,
}

/// A running process group; its stdout and stderr are piped for the caller to read.
#[derive(Debug)]
pub struct RunningChild {
    pub pid: u32,
    child: Child,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
    record: Option<PathBuf>,
    /// This start's [`MARKER`] value, inherited by everything it starts.
    marker: String,
    /// The last stop had to send SIGKILL: the program outlived its stop signal's grace.
    pub killed: bool,
    /// The tasks that log its stdout and stderr ([`RunningChild::keep_output`]).
    output: Vec<tokio::task::JoinHandle<()>>,
}

/// The variable every started process gets, unique to that start (`<label>/<stack's pid>-<n>`):
/// a descendant that left the process group (`setsid`, a daemonising server) still carries it
/// in its environment, so a stop finds it there ([`kill_marked`]).
pub const MARKER: &str = "STACK_PROCESS";

/// `<project>/.stack/pids/`: where the process groups `stack up` starts are recorded.
pub fn pids_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(crate::state::STATE_DIR).join("pids")
}

/// Starts `spec` in a new process group and records it under `pids_dir`.
pub fn spawn(spec: &ChildSpec, pids_dir: &Path) -> Result<RunningChild, ProcessError> {
    static STARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let marker = format!("{}/{}-{n}", spec.label, std::process::id());
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&spec.env)
        .env(MARKER, &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let (mut child, pid, record) = spawn_group(&mut command, &spec.label, pids_dir, Some(&marker))
        .map_err(|source| ProcessError::Spawn {
            program: spec.program.display().to_string(),
            source,
        })?;
    Ok(RunningChild {
        pid,
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child,
        record,
        marker,
        killed: false,
        output: Vec::new(),
    })
}

/// A build tool's process group (cargo, npm), alive as long as this value. Dropping it (the
/// build ended, or was abandoned at Ctrl-C, `stack down` or a newer save) kills whatever is
/// left of the group: rustc and build scripts, not only cargo.
#[derive(Debug)]
pub struct ToolGroup {
    pid: u32,
    record: Option<PathBuf>,
}

/// Starts a build tool as every child is started: the leader of its own process group, with
/// the parent-death signal, recorded under `pids_dir` (so a `stack up` that is killed mid-build
/// leaves no compiler behind either). Unlike [`spawn`], it inherits the caller's environment
/// and keeps the caller's stdio settings.
pub fn spawn_tool(
    command: &mut Command,
    label: &str,
    pids_dir: &Path,
) -> io::Result<(Child, ToolGroup)> {
    command.kill_on_drop(true);
    let (child, pid, record) = spawn_group(command, label, pids_dir, None)?;
    Ok((child, ToolGroup { pid, record }))
}

/// Spawns `command` as the leader of a new process group (so a stop reaches the program's own
/// children too: npm -> sh -> node, cargo -> rustc), with the parent-death signal, and records
/// the group under `pids_dir` (a failed record is logged, not fatal).
fn spawn_group(
    command: &mut Command,
    label: &str,
    pids_dir: &Path,
    marker: Option<&str>,
) -> io::Result<(Child, u32, Option<PathBuf>)> {
    command.process_group(0);
    set_parent_death_signal(command);
    let child = command.spawn()?;
    let pid = child
        .id()
        .expect("a child that was just spawned and not yet awaited has a pid");
    let record = record_group(pids_dir, pid, label, marker)
        .map_err(|error| tracing::warn!(%error, pid, "cannot record the process group"))
        .ok();
    Ok((child, pid, record))
}

impl Drop for ToolGroup {
    fn drop(&mut self) {
        signal_group(self.pid, Signal::SIGKILL);
        if let Some(record) = self.record.take() {
            let _ = fs::remove_file(record);
        }
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec. It only calls prctl(2), which is
    // async-signal-safe, allocates nothing and touches no lock held by another thread.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            Ok(())
        });
    }
}

impl RunningChild {
    /// Waits for the group leader to exit (reaping it), then kills whatever is left of its group.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.finish();
        status
    }

    /// `Some(status)` when the leader has exited (it is reaped then), without waiting.
    pub fn try_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.finish();
        }
        Ok(status)
    }

    /// Stops the group: SIGTERM to every process in it, SIGKILL once `grace` has passed.
    pub async fn stop(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.stop_with(Signal::SIGTERM, grace).await
    }

    /// [`stop`](Self::stop) with another first signal (a service's `stop_signal`).
    ///
    /// The whole group has the grace, not only its leader: `sh -c "python3 app.py"` (a
    /// string `run`; dash does not exec its last command) exits on the signal at once, while
    /// the program it started is still shutting down cleanly, and is not cut short for that.
    pub async fn stop_with(&mut self, signal: Signal, grace: Duration) -> io::Result<ExitStatus> {
        signal_group(self.pid, signal);
        let deadline = tokio::time::Instant::now() + grace;
        let status = match tokio::time::timeout_at(deadline, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "still running after its stop signal; SIGKILL"
                );
                signal_group(self.pid, Signal::SIGKILL);
                self.killed = true;
                self.child.wait().await
            }
        };
        while !self.killed && !group_members(self.pid).is_empty() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    pid = self.pid,
                    ?grace,
                    "its group outlived the stop signal; SIGKILL"
                );
                self.killed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.finish();
        status
    }

    /// A task reading its output, so that [`RunningChild::output_done`] can wait for it.
    pub fn keep_output(&mut self, task: tokio::task::JoinHandle<()>) {
        self.output.push(task);
    }

    /// After an exit: waits (a second at most) until what it printed last is logged, so a
    /// line about its exit never comes before its own last lines.
    pub async fn output_done(&mut self) {
        for task in self.output.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }

    /// The leader is gone: stragglers of its group, and those that left it, get SIGKILL and
    /// the record goes.
    fn finish(&mut self) {
        signal_group(self.pid, Signal::SIGKILL);
        let escaped = kill_marked(&self.marker);
        if escaped > 0 {
            tracing::info!(
                pid = self.pid,
                escaped,
                "killed processes that had left the group"
            );
        }
        if let Some(record) = self.record.take() {
            let _ = fs::remove_file(record);
        }
    }
}

fn signal_group(pgid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    // ESRCH (the group is already gone) is the normal case after the leader exited.
    let _ = killpg(Pid::from_raw(raw), signal);
}

/// A watchdog for when `stack up` dies without stopping its children (SIGKILL, a crash): a tiny
/// shell in its own process group that blocks reading a pipe only `stack up` holds. When that
/// pipe closes, however `stack up` ended, it kills every process group still recorded in
/// `.stack/pids/` (a clean stop has removed them all by then). The parent-death signal alone
/// only reaches direct children; this reaches their children too (npm -> sh -> node).
#[derive(Debug)]
pub struct Guard {
    _child: Child,
}

/// Starts the watchdog for `pids_dir`.
pub fn start_guard(pids_dir: &Path) -> Result<Guard, ProcessError> {
    const SCRIPT: &str = r#"read _; cd "$0" || exit 0; for f in *; do [ -f "$f" ] && kill -9 "-$f" 2>/dev/null; done; exit 0"#;
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg(pids_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: "/bin/sh".into(),
            source,
        })?;
    Ok(Guard { _child: child })
}

/// SIGKILL to every process of this user whose environment holds `MARKER=marker`: what a
/// start left behind outside its process group. The number killed.
pub fn kill_marked(marker: &str) -> usize {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    let wanted = format!("{MARKER}={marker}");
    let mut killed = 0;
    for pid in entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
    {
        // Another user's process (or one that is gone) cannot be read: not ours.
        let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|byte| *byte == 0)
            .any(|entry| entry == wanted.as_bytes())
            && nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// `.stack/pids/<pgid>` holds the leader's start time (to tell a reused pid apart), a label
/// and the start's [`MARKER`] value, if it has one.
fn record_group(
    pids_dir: &Path,
    pid: u32,
    label: &str,
    marker: Option<&str>,
) -> io::Result<PathBuf> {
    crate::state::create_private_dir(pids_dir)?;
    let start_time = process_start_time(pid).unwrap_or_default();
    let path = pids_dir.join(pid.to_string());
    let mut record = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    let marker = marker.unwrap_or_default();
    io::Write::write_all(
        &mut record,
        format!("{start_time}\n{label}\n{marker}\n").as_bytes(),
    )?;
    Ok(path)
}

/// Kills every process group recorded under `pids_dir` by an earlier `stack up` that did not
/// stop them (it was killed), and removes the records. Returns the labels of what was killed.
///
/// A record is trusted only when its leader still has the recorded start time, or when the
/// leader is gone but members of its group remain (Linux never reuses a pid that is still some
/// group's id, so those members are ours).
pub fn kill_leftovers(pids_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pids_dir) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pgid) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.lines();
        let recorded_start = lines.next().unwrap_or_default();
        let label = lines.next().unwrap_or("process").to_string();
        let marker = lines.next().filter(|marker| !marker.is_empty());
        let ours = match process_start_time(pgid) {
            Some(start) => start.to_string() == recorded_start,
            None => !group_members(pgid).is_empty(),
        };
        if ours {
            signal_group(pgid, Signal::SIGKILL);
        }
        // What left the group carries its start's marker, whether or not the group remains.
        let escaped = marker.map_or(0, kill_marked);
        if ours || escaped > 0 {
            killed.push(label);
        }
        let _ = fs::remove_file(&path);
    }
    killed
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(19)?.parse().ok()
}

/// The fields of a `/proc/<pid>/stat` line after the `(comm)` one (which may hold spaces):
/// index 0 is the state, 2 the process group, 19 the start time.
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(end) => stat[end + 1..].split_whitespace().collect(),
        None => Vec::new(),
    }
}

/// Pids of the live processes whose process group is `pgid` (zombies excluded).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pgid_text = pgid.to_string();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields = stat_fields(&stat);
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid_text.as_str())
        })
        .collect()
}

/// TCP ports that processes of group `pgid` listen on (Linux `/proc`): the socket inodes among
/// their open files, looked up in their `net/tcp` and `net/tcp6` tables in LISTEN state.
pub fn listening_ports(pgid: u32) -> Vec<u16> {
    let mut ports = Vec::new();
    for pid in group_members(pgid) {
        let inodes = socket_inodes(pid);
        if inodes.is_empty() {
            continue;
        }
        for (port, inode) in listening_sockets(&format!("/proc/{pid}/net")) {
            if inodes.contains(&inode) && !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ports
}

/// The process listening on TCP `port`, with its command name (`stack doctor`): `None` when
/// nothing listens, or the listener is a process this user cannot see into.
pub fn port_holder(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<String> = listening_sockets("/proc/net")
        .into_iter()
        .filter(|(listening, _)| *listening == port)
        .map(|(_, inode)| inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            socket_inodes(*pid)
                .iter()
                .any(|inode| inodes.contains(inode))
        })
        .map(|pid| {
            let command = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, command.trim().to_string())
        })
}

/// The inodes of the sockets `pid` has open.
fn socket_inodes(pid: u32) -> Vec<String> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect()
}

/// Every (port, inode) in LISTEN state in the `tcp` and `tcp6` tables under `net_dir`.
fn listening_sockets(net_dir: &str) -> Vec<(u16, String)> {
    let mut sockets = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("{net_dir}/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (`ADDR:PORT` in hex), st is 3 (`0A` = LISTEN), inode 9.
            let (Some(local), Some(&"0A"), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if let Some(port) = local
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            {
                sockets.push((port, inode.to_string()));
            }
        }
    }
    sockets
}

/// The process groups recorded under `pids_dir` (by a running `stack up`, or one that died).
pub fn recorded_groups(pids_dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(pids_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, dir: &Path) -> ChildSpec {
        ChildSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: dir.to_path_buf(),
            env: [(
                "PATH".to_string(),
                std::env::var("PATH").unwrap_or_default(),
            )]
            .into(),
            label: "test".into(),
        }
    }

    #[tokio::test]
    async fn stop_reaches_the_whole_group_and_removes_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell ignores SIGTERM and starts a grandchild; both must be gone after stop().
        let mut child = spawn(
            &shell("trap '' TERM; sleep 30 & sleep 30; wait", dir.path()),
            &pids,
        )
        .unwrap();
        assert!(pids.join(child.pid.to_string()).exists());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_members(child.pid).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "group never grew");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = std::time::Instant::now();
        child.stop(Duration::from_millis(300)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        // SIGKILL is delivered at once but the grandchild dies a moment later.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !group_members(child.pid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "group survived the stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!pids.join(child.pid.to_string()).exists());
    }

    #[tokio::test]
    async fn the_guard_kills_recorded_groups_when_its_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // A grandchild, which the parent-death signal would not reach.
        let child = spawn(&shell("sleep 30 & wait", dir.path()), &pids).unwrap();
        let pid = child.pid;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while group_members(pid).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "group never grew");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let guard = start_guard(&pids).unwrap();
        std::mem::forget(child);
        // What happens when `stack up` dies: the write end of the pipe closes.
        drop(guard);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !group_members(pid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the guard did not kill the group"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn finds_the_port_a_process_listens_on_and_kills_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let script = format!(
            "require('net').createServer().listen({port}, '127.0.0.1'); setInterval(() => {{}}, 1000)"
        );
        let mut spec = shell("", dir.path());
        spec.program = "node".into();
        spec.args = vec!["-e".into(), script.into()];
        let child = spawn(&spec, &pids).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if listening_ports(child.pid) == vec![port] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "port never found");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Pretend stack up died: a new one finds the record and kills the group.
        let pid = child.pid;
        std::mem::forget(child);
        assert_eq!(kill_leftovers(&pids), vec!["test".to_string()]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !group_members(pid).is_empty() {
            assert!(std::time::Instant::now() < deadline, "leftover survived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
