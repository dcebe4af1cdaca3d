//! The programs a `stack up` needs before it builds anything: `redis-server` when it manages
//! the session store, `node` and `npm` for Node services. Checked in milliseconds, before the
//! first build, so a missing one costs the user a second, not a build; the error names every
//! missing program with the command that installs them on this machine's OS. `stack doctor`
//! reads the same list, with each program's version.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A program stack runs for a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    RedisServer,
    Node,
    Npm,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::RedisServer => "redis-server",
            Tool::Node => "node",
            Tool::Npm => "npm",
        }
    }

    /// Why the project needs it.
    pub fn needed_for(self) -> &'static str {
        match self {
            Tool::RedisServer => "the managed session store (unset REDIS_SESSION_URL)",
            Tool::Node | Tool::Npm => "the Node services",
        }
    }

    /// Its package on each packaging system.
    fn package(self, os: Os) -> &'static str {
        match (self, os) {
            (Tool::RedisServer, Os::Debian) => "redis-server",
            (Tool::RedisServer, _) => "redis",
            (Tool::Node, Os::Debian | Os::Fedora | Os::Arch) => "nodejs",
            (Tool::Node, Os::MacOs | Os::Other) => "node",
            (Tool::Npm, Os::MacOs | Os::Other) => "node",
            (Tool::Npm, _) => "npm",
        }
    }

    /// The first line of `<program> --version`, if it runs.
    pub fn version(self, path_variable: Option<&str>) -> Option<String> {
        let program = find(self.program(), path_variable)?;
        let mut child = Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // A program that hangs on `--version` is not worth waiting for.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while child.try_wait().ok()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let output = child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines().next().map(|line| line.trim().to_string())
    }
}

/// What a project needs: the managed Redis, Node services.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub managed_redis: bool,
    pub node: bool,
}

impl Needs {
    pub fn tools(self) -> Vec<Tool> {
        let mut tools = Vec::new();
        if self.managed_redis {
            tools.push(Tool::RedisServer);
        }
        if self.node {
            tools.extend([Tool::Node, Tool::Npm]);
        }
        tools
    }
}

/// The tools of `needs` that are not on `path_variable` (the services' `PATH`).
pub fn missing(needs: Needs, path_variable: Option<&str>) -> Vec<Tool> {
    needs
        .tools()
        .into_iter()
        .filter(|tool| find(tool.program(), path_variable).is_none())
        .collect()
}

/// `program` on `path_variable`.
pub fn find(program: &str, path_variable: Option<&str>) -> Option<PathBuf> {
    std::env::split_paths(path_variable?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The families of systems whose install commands differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Debian,
    Fedora,
    Arch,
    MacOs,
    Other,
}

impl Os {
    /// This machine's, from `/etc/os-release` (`ID` and `ID_LIKE`).
    pub fn detect() -> Os {
        if cfg!(target_os = "macos") {
            return Os::MacOs;
        }
        Os::from_os_release(&std::fs::read_to_string("/etc/os-release").unwrap_or_default())
    }

    fn from_os_release(text: &str) -> Os {
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|line| {
                line.strip_prefix("ID=")
                    .or_else(|| line.strip_prefix("ID_LIKE="))
            })
            .flat_map(|value| value.trim_matches('"').split_whitespace())
            .collect();
        let any = |names: &[&str]| ids.iter().any(|id| names.contains(id));
        if any(&["debian", "ubuntu"]) {
            Os::Debian
        } else if any(&["fedora", "rhel", "centos"]) {
            Os::Fedora
        } else if any(&["arch"]) {
            Os::Arch
        } else {
            Os::Other
        }
    }
}

/// The command that installs `tools` on `os`.
pub fn install_command(tools: &[Tool], os: Os) -> String {
    let mut packages: Vec<&str> = tools.iter().map(|tool| tool.package(os)).collect();
    packages.dedup();
    install_command_for(&packages.join(" "), os)
}

/// The command that installs `packages` (space-separated) on `os`.
fn install_command_for(packages: &str, os: Os) -> String {
    match os {
        Os::Debian => format!("sudo apt-get install {packages}"),
        Os::Fedora => format!("sudo dnf install {packages}"),
        Os::Arch => format!("sudo pacman -S {packages}"),
        Os::MacOs => format!("brew install {packages}"),
        Os::Other => format!("install {packages} with your system's package manager"),
    }
}

/// "`a`", "`a` and `b`", "`a`, `b` and `c`".
pub fn names(tools: &[Tool]) -> String {
    let quoted: Vec<String> = tools
        .iter()
        .map(|tool| format!("`{}`", tool.program()))
        .collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Whether a directory is a Node service that needs `node` and `npm` (for `stack doctor`,
/// which has no discovered services at hand).
pub fn is_node_service(dir: &Path) -> bool {
    dir.join("package.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_family_comes_from_os_release() {
        let os = Os::from_os_release;
        assert_eq!(os("ID=debian\n"), Os::Debian);
        assert_eq!(os("ID=ubuntu\nID_LIKE=debian\n"), Os::Debian);
        assert_eq!(os("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"), Os::Debian);
        assert_eq!(
            os("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            Os::Fedora
        );
        assert_eq!(os("ID=arch\n"), Os::Arch);
        assert_eq!(os(""), Os::Other);
    }

    #[test]
    fn one_command_installs_everything_missing() {
        let all = [Tool::RedisServer, Tool::Node, Tool::Npm];
        assert_eq!(
            install_command(&all, Os::Debian),
            "sudo apt-get install redis-server nodejs npm"
        );
        assert_eq!(install_command(&all, Os::MacOs), "brew install redis node");
        assert_eq!(names(&all), "`redis-server`, `node` and `npm`");
        assert_eq!(names(&all[..1]), "`redis-server`");
    }

    #[test]
    fn missing_tools_are_those_not_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node"), "").unwrap();
        let path = dir.path().display().to_string();
        let needs = Needs {
            managed_redis: true,
            node: true,
        };
        assert_eq!(missing(needs, Some(&path)), [Tool::RedisServer, Tool::Npm]);
        assert_eq!(missing(Needs::default(), Some(&path)), []);
    }
}

/// A program a declared service's `build` or `run` names (`python3`, `go`), missing from PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingProgram {
    pub program: String,
    /// The services that name it.
    pub services: Vec<String>,
}

/// The bare program names of `commands` (service, program) that are not on `path_variable`.
pub fn missing_programs(
    commands: &[(String, String)],
    path_variable: Option<&str>,
) -> Vec<MissingProgram> {
    let mut missing: Vec<MissingProgram> = Vec::new();
    for (service, program) in commands {
        if find(program, path_variable).is_some() {
            continue;
        }
        match missing.iter_mut().find(|entry| &entry.program == program) {
            Some(entry) if !entry.services.contains(service) => {
                entry.services.push(service.clone())
            }
            Some(_) => {}
            None => missing.push(MissingProgram {
                program: program.clone(),
                services: vec![service.clone()],
            }),
        }
    }
    missing
}

/// How to install an interpreter a declared service names, where stack knows it.
pub fn interpreter_hint(program: &str, os: Os) -> Option<String> {
    let package = match (program, os) {
        ("python3" | "python", Os::Debian) => "python3 python3-venv",
        ("python3" | "python", _) => "python3",
        ("go", Os::Debian) => "golang-go",
        ("go", _) => "go",
        ("ruby", _) => "ruby",
        ("php", _) => "php",
        ("java", Os::Debian) => "default-jre",
        _ => return None,
    };
    Some(install_command_for(package, os))
}
