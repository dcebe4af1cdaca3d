//! Which directories a service is built from: its own directory and, for a Cargo service,
//! every local path dependency, transitively (`services/session` belongs to both `writer` and
//! `reader`). Asks `cargo metadata --no-deps --format-version 1` once per workspace at start;
//! never builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::WatchedService;
use crate::supervisor::build::{Service, ServiceKind};

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("cannot run `cargo metadata` in `{dir}`: {reason}")]
    Metadata { dir: String, reason: String },
}

#[derive(Debug, Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    manifest_path: PathBuf,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    /// Set for path dependencies only.
    #[serde(default)]
    path: Option<PathBuf>,
}

/// Each service with the directories to watch for it.
/// The directory part of a glob before its first wildcard: `src` of `src/**/*.py`.
fn literal_prefix(glob: &str) -> &str {
    let wild = glob.find(['*', '?', '[', '{']).unwrap_or(glob.len());
    match glob[..wild].rfind('/') {
        Some(slash) if wild < glob.len() => &glob[..slash],
        None if wild < glob.len() => "",
        _ => glob.trim_end_matches('/'),
    }
}

/// Globs relative to the project as one absolute matcher; a plain path matches what is under
/// it too. Globs were checked when `stack.toml` was read: a bad one matches nothing.
fn glob_set(project: &Path, globs: &[String]) -> globset::GlobSet {
    let mut builder = globset::GlobSetBuilder::new();
    for glob in globs {
        let absolute = project.join(glob.trim_end_matches('/'));
        let text = absolute.to_string_lossy().into_owned();
        for pattern in [text.clone(), format!("{text}/**")] {
            if let Ok(glob) = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
            {
                builder.add(glob);
            }
        }
    }
    builder
        .build()
        .unwrap_or_else(|_| globset::GlobSet::empty())
}

pub fn watched_dirs(
    project: &Path,
    services: &[Service],
) -> Result<Vec<WatchedService>, DepsError> {
    // One metadata run per workspace: the project's when it has a Cargo.toml, else each
    // service's own manifest (cargo finds the workspace it belongs to).
    let mut packages: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    let cargo_services: Vec<&Service> = services
        .iter()
        .filter(|service| matches!(service.kind, ServiceKind::Cargo { .. }))
        .collect();
    if !cargo_services.is_empty() {
        let manifests: Vec<PathBuf> = if project.join("Cargo.toml").is_file() {
            vec![project.join("Cargo.toml")]
        } else {
            cargo_services
                .iter()
                .map(|service| service.dir.join("Cargo.toml"))
                .collect()
        };
        let mut seen = BTreeSet::new();
        for manifest in manifests {
            for package in metadata(&manifest)? {
                if !seen.insert(package.manifest_path.clone()) {
                    continue;
                }
                let dir = package_dir(&package.manifest_path);
                let path_deps = package
                    .dependencies
                    .iter()
                    .filter_map(|dependency| dependency.path.as_ref())
                    .map(|path| path.canonicalize().unwrap_or(path.clone()))
                    .collect();
                tracing::debug!(package = package.name, dir = %dir.display(), "cargo package");
                packages.insert(dir, path_deps);
            }
        }
    }
    Ok(services
        .iter()
        .map(|service| {
            let own = service.dir.canonicalize().unwrap_or(service.dir.clone());
            let mut dirs = BTreeSet::from([own.clone()]);
            if matches!(service.kind, ServiceKind::Cargo { .. }) {
                let mut queue = vec![own];
                while let Some(dir) = queue.pop() {
                    for dependency in packages.get(&dir).into_iter().flatten() {
                        if dirs.insert(dependency.clone()) {
                            queue.push(dependency.clone());
                        }
                    }
                }
            }
            // `watch` of stack.toml: the directories its globs start in, and only what they match.
            let project_root = project.canonicalize().unwrap_or(project.to_path_buf());
            let only = (!service.watch.is_empty()).then(|| {
                dirs = service
                    .watch
                    .iter()
                    .map(|glob| project_root.join(literal_prefix(glob)))
                    .map(|dir| dir.canonicalize().unwrap_or(dir))
                    .collect();
                glob_set(&project_root, &service.watch)
            });
            let ignore =
                (!service.ignore.is_empty()).then(|| glob_set(&project_root, &service.ignore));
            WatchedService {
                name: service.name.clone(),
                dirs: dirs.into_iter().collect(),
                only,
                ignore,
            }
        })
        .collect())
}

fn package_dir(manifest: &Path) -> PathBuf {
    let dir = manifest.parent().unwrap_or(manifest).to_path_buf();
    dir.canonicalize().unwrap_or(dir)
}

fn metadata(manifest: &Path) -> Result<Vec<Package>, DepsError> {
    let dir = manifest
        .parent()
        .unwrap_or(Path::new("."))
        .display()
        .to_string();
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| DepsError::Metadata {
            dir: dir.clone(),
            reason: error.to_string(),
        })?;
    if !output.status.success() {
        return Err(DepsError::Metadata {
            dir,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let metadata: Metadata =
        serde_json::from_slice(&output.stdout).map_err(|error| DepsError::Metadata {
            dir,
            reason: error.to_string(),
        })?;
    Ok(metadata.packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glob_is_watched_from_its_literal_directory_and_matches_what_it_says() {
        assert_eq!(literal_prefix("services/api/**/*.py"), "services/api");
        assert_eq!(literal_prefix("*.py"), "");
        assert_eq!(literal_prefix("services/api/"), "services/api");
        let project = Path::new("/p");
        let watch = glob_set(project, &["services/api/**/*.py".into(), "shared".into()]);
        assert!(watch.is_match("/p/services/api/app.py"));
        assert!(watch.is_match("/p/services/api/lib/db.py"));
        assert!(!watch.is_match("/p/services/api/README.md"));
        assert!(watch.is_match("/p/shared/x.txt"));
        let ignore = glob_set(project, &["services/api/*.log".into()]);
        assert!(ignore.is_match("/p/services/api/out.log"));
        assert!(!ignore.is_match("/p/services/api/app.py"));
    }
}
