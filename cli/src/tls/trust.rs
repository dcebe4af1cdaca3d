//! `stack trust`: the local CA installed where this machine's clients look, and removed again.
//!
//! The places: the Debian/Ubuntu system store (a file in `/usr/local/share/ca-certificates`,
//! then `update-ca-certificates`), the NSS databases Chromium (`~/.pki/nssdb`) and Firefox
//! (each profile under `~/.mozilla/firefox`) read, through `certutil`, and on macOS the system
//! keychain through `security`. Each is tried on its own and reported: what changed, what
//! could not, and the command to do that by hand. What was installed is recorded in
//! `$STACK_HOME/trusted`, so `--uninstall` removes every trace and `stack up` knows whether to
//! say how to trust the CA. Tests move every place with variables (`STACK_TRUST_SYSTEM_DIR`,
//! `STACK_TRUST_UPDATE_COMMAND`, `STACK_TRUST_NSS_DBS`), never touching the real ones.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ca::CA_NAME;

/// The record of what `stack trust` installed, in `$STACK_HOME`.
pub const TRUSTED_FILE: &str = "trusted";
/// The CA's file name in the system store.
const SYSTEM_FILE: &str = "stack-local-ca.crt";
const DEFAULT_SYSTEM_DIR: &str = "/usr/local/share/ca-certificates";
const DEFAULT_UPDATE_COMMAND: &str = "update-ca-certificates";

/// Whether `stack trust` installed the CA of `dir` somewhere (and has not uninstalled it).
pub fn is_trusted(dir: &Path) -> bool {
    dir.join(TRUSTED_FILE).is_file()
}

/// Where to install, from the environment (tests) or this machine's defaults.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The system store's directory (Debian/Ubuntu), when this machine has one.
    pub system_dir: Option<PathBuf>,
    /// What refreshes the system store after a change; `None`: nothing to run.
    pub update_command: Option<String>,
    /// NSS databases (`sql:` directories).
    pub nss_dbs: Vec<PathBuf>,
    /// The macOS system keychain, through `security`.
    pub macos_keychain: bool,
}

impl Stores {
    pub fn from_environment() -> Stores {
        let var = |name: &str| std::env::var_os(name);
        let system_dir = match var("STACK_TRUST_SYSTEM_DIR") {
            Some(dir) => (!dir.is_empty()).then(|| PathBuf::from(dir)),
            None => Some(PathBuf::from(DEFAULT_SYSTEM_DIR))
                .filter(|dir| !cfg!(target_os = "macos") && dir.parent().is_some_and(Path::is_dir)),
        };
        let update_command = match std::env::var("STACK_TRUST_UPDATE_COMMAND") {
            Ok(command) => (!command.trim().is_empty()).then_some(command),
            Err(_) => Some(DEFAULT_UPDATE_COMMAND.to_string()),
        };
        let nss_dbs = match var("STACK_TRUST_NSS_DBS") {
            Some(dbs) => std::env::split_paths(&dbs)
                .filter(|db| !db.as_os_str().is_empty())
                .collect(),
            None => default_nss_dbs(),
        };
        Stores {
            system_dir,
            update_command,
            nss_dbs,
            macos_keychain: cfg!(target_os = "macos") && var("STACK_TRUST_NSS_DBS").is_none(),
        }
    }
}

/// Chromium's database, and each Firefox profile that has one.
fn default_nss_dbs() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        return Vec::new();
    };
    let mut dbs = vec![home.join(".pki/nssdb")];
    for profiles in [".mozilla/firefox", "snap/firefox/common/.mozilla/firefox"] {
        if let Ok(entries) = std::fs::read_dir(home.join(profiles)) {
            dbs.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|profile| profile.join("cert9.db").is_file()),
            );
        }
    }
    dbs
}

/// One place's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Done: what changed.
    Changed(String),
    /// Nothing to do there (not installed, or not found).
    Skipped(String),
    /// Could not: why, and the command to do it by hand.
    Failed { what: String, manual: String },
}

/// Installs `ca_file` (the CA of `home`) in every store; records what it installed.
pub fn install(home: &Path, ca_file: &Path, stores: &Stores) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut installed = Vec::new();
    if let Some(dir) = &stores.system_dir {
        let target = dir.join(SYSTEM_FILE);
        let manual = format!(
            "sudo cp {} {} && sudo {}",
            ca_file.display(),
            target.display(),
            stores
                .update_command
                .as_deref()
                .unwrap_or(DEFAULT_UPDATE_COMMAND)
        );
        match std::fs::create_dir_all(dir).and_then(|()| std::fs::copy(ca_file, &target)) {
            Ok(_) => {
                installed.push(format!("system {}", target.display()));
                steps.push(Step::Changed(format!(
                    "the system store: `{}`",
                    target.display()
                )));
                steps.extend(refresh_system_store(stores, &manual));
            }
            Err(error) => steps.push(Step::Failed {
                what: format!(
                    "the system store: cannot write `{}`: {error}",
                    target.display()
                ),
                manual,
            }),
        }
    }
    for db in &stores.nss_dbs {
        let manual = format!(
            "certutil -d sql:{} -A -t C,, -n '{CA_NAME}' -i {}",
            db.display(),
            ca_file.display()
        );
        let created = !db.join("cert9.db").is_file();
        let made = if created {
            std::fs::create_dir_all(db)
                .map_err(|error| error.to_string())
                .and_then(|()| certutil(db, &["-N", "--empty-password"]))
        } else {
            Ok(())
        };
        let added = made.and_then(|()| {
            let ca = ca_file.display().to_string();
            certutil(db, &["-A", "-t", "C,,", "-n", CA_NAME, "-i", &ca])
        });
        match added {
            Ok(()) => {
                installed.push(format!("nss {}", db.display()));
                steps.push(Step::Changed(format!(
                    "the NSS database `{}`{} (Chromium, Firefox)",
                    db.display(),
                    if created { ", created" } else { "" }
                )));
            }
            Err(error) => steps.push(Step::Failed {
                what: format!("the NSS database `{}`: {error}", db.display()),
                manual,
            }),
        }
    }
    if stores.macos_keychain {
        let ca = ca_file.display().to_string();
        let args = [
            "add-trusted-cert",
            "-d",
            "-r",
            "trustRoot",
            "-k",
            "/Library/Keychains/System.keychain",
            &ca,
        ];
        match run("security", &args) {
            Ok(()) => {
                installed.push("macos".to_string());
                steps.push(Step::Changed("the macOS system keychain".into()));
            }
            Err(error) => steps.push(Step::Failed {
                what: format!("the macOS system keychain: {error}"),
                manual: format!("sudo security {}", args.join(" ")),
            }),
        }
    }
    if !installed.is_empty() {
        let record = home.join(TRUSTED_FILE);
        let mut text = installed.join("\n");
        text.push('\n');
        if let Err(error) = std::fs::write(&record, text) {
            steps.push(Step::Failed {
                what: format!(
                    "cannot record what was installed in `{}`: {error}",
                    record.display()
                ),
                manual: "run `stack trust` again".into(),
            });
        }
    }
    steps
}

/// Removes the CA from every store (those recorded and those given), then the record.
pub fn uninstall(home: &Path, stores: &Stores) -> Vec<Step> {
    let record = home.join(TRUSTED_FILE);
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    let mut system_files: Vec<PathBuf> = stores
        .system_dir
        .iter()
        .map(|dir| dir.join(SYSTEM_FILE))
        .collect();
    let mut dbs = stores.nss_dbs.clone();
    let mut macos = stores.macos_keychain;
    for line in recorded.lines() {
        match line.split_once(' ') {
            Some(("system", path)) => system_files.push(PathBuf::from(path)),
            Some(("nss", db)) => dbs.push(PathBuf::from(db)),
            _ if line == "macos" => macos = true,
            _ => {}
        }
    }
    system_files.sort();
    system_files.dedup();
    dbs.sort();
    dbs.dedup();
    let mut steps = Vec::new();
    let mut failed = false;
    for file in &system_files {
        if !file.exists() {
            continue;
        }
        let manual = format!(
            "sudo rm {} && sudo {} --fresh",
            file.display(),
            stores
                .update_command
                .as_deref()
                .unwrap_or(DEFAULT_UPDATE_COMMAND)
        );
        match std::fs::remove_file(file) {
            Ok(()) => {
                steps.push(Step::Changed(format!(
                    "the system store: removed `{}`",
                    file.display()
                )));
                steps.extend(refresh_system_store(stores, &manual));
            }
            Err(error) => {
                failed = true;
                steps.push(Step::Failed {
                    what: format!(
                        "the system store: cannot remove `{}`: {error}",
                        file.display()
                    ),
                    manual,
                });
            }
        }
    }
    for db in &dbs {
        if !db.join("cert9.db").is_file() {
            continue;
        }
        if certutil(db, &["-L", "-n", CA_NAME]).is_err() {
            continue;
        }
        // A nickname may be there more than once (installed twice): delete until it is gone.
        let mut removed = Ok(());
        while certutil(db, &["-L", "-n", CA_NAME]).is_ok() {
            removed = certutil(db, &["-D", "-n", CA_NAME]);
            if removed.is_err() {
                break;
            }
        }
        match removed {
            Ok(()) => steps.push(Step::Changed(format!(
                "the NSS database `{}`: removed",
                db.display()
            ))),
            Err(error) => {
                failed = true;
                steps.push(Step::Failed {
                    what: format!("the NSS database `{}`: {error}", db.display()),
                    manual: format!("certutil -d sql:{} -D -n '{CA_NAME}'", db.display()),
                });
            }
        }
    }
    if macos {
        let ca = home.join(super::CA_CERT_FILE).display().to_string();
        match run("security", &["remove-trusted-cert", "-d", &ca]) {
            Ok(()) => steps.push(Step::Changed("the macOS system keychain: removed".into())),
            Err(error) => {
                failed = true;
                steps.push(Step::Failed {
                    what: format!("the macOS system keychain: {error}"),
                    manual: format!("sudo security remove-trusted-cert -d {ca}"),
                });
            }
        }
    }
    if !failed {
        let _ = std::fs::remove_file(&record);
    }
    if steps.is_empty() {
        steps.push(Step::Skipped(
            "the local CA was not installed anywhere".into(),
        ));
    }
    steps
}

fn refresh_system_store(stores: &Stores, manual: &str) -> Option<Step> {
    let command = stores.update_command.as_deref()?;
    let mut words = command.split_whitespace();
    let program = words.next()?;
    let args: Vec<&str> = words.collect();
    Some(match run(program, &args) {
        Ok(()) => Step::Changed(format!("the system store: ran `{command}`")),
        Err(error) => Step::Failed {
            what: format!("the system store: `{command}` failed: {error}"),
            manual: manual.to_string(),
        },
    })
}

fn certutil(db: &Path, args: &[&str]) -> Result<(), String> {
    let mut full = vec!["-d".to_string(), format!("sql:{}", db.display())];
    full.extend(args.iter().map(|arg| arg.to_string()));
    let full: Vec<&str> = full.iter().map(String::as_str).collect();
    run("certutil", &full).map_err(|error| {
        if error.contains("not found") {
            format!(
                "{error} (install it: `sudo apt-get install libnss3-tools`, or `brew install nss`)"
            )
        } else {
            error
        }
    })
}

/// Runs a one-shot tool to its end (`certutil`, `update-ca-certificates`, `security`); its
/// error output on failure. The tools only ever see the CA's certificate, never its key.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => format!("`{program}` not found on PATH"),
            _ => format!("cannot run `{program}`: {error}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!(
        "`{program}` exited with {}: {}",
        output.status,
        stderr.trim().lines().last().unwrap_or("")
    ))
}
