//! Shell completion: `stack completions SHELL` prints a script that asks `stack` itself for
//! candidates as the user types (clap_complete's dynamic completion), so service, deployment
//! and alias names complete from the project in the shell's current directory: what
//! `.stack/state.json` records and what `services/` holds. Reading them never fails a
//! completion: a project without state completes no names.

use std::path::Path;

use clap_complete::CompletionCandidate;

use crate::state::State;

/// The environment variable the scripts set when they call back into `stack`.
pub const VAR: &str = "COMPLETE";

/// Services (discovered and recorded) and deployment ids: what `scale` and `logs` take.
pub fn targets() -> Vec<CompletionCandidate> {
    let mut names = services();
    names.extend(deployments());
    names
}

/// [`targets`] and each instance a service runs by its recorded scale (`reader.1`): what
/// `restart` takes.
pub fn instance_targets() -> Vec<CompletionCandidate> {
    let state = state();
    let services: Vec<String> = services()
        .iter()
        .map(|candidate| candidate.get_value().to_string_lossy().into_owned())
        .collect();
    let instances = services.iter().flat_map(|service| {
        (0..state.scale_of(service)).map(move |number| format!("{service}.{number}"))
    });
    let mut names = targets();
    names.extend(candidates(instances, "instance"));
    names
}

/// Services: the directories under `services/` and those with recorded deployments.
pub fn services() -> Vec<CompletionCandidate> {
    let dir = Path::new(".");
    let mut names: Vec<String> = crate::config::service_names(dir);
    names.extend(state().deployments.into_keys());
    candidates(names, "service")
}

/// Recorded deployment ids.
pub fn deployments() -> Vec<CompletionCandidate> {
    let ids = state()
        .deployments
        .into_values()
        .flat_map(|history| history.deployments)
        .map(|record| record.id);
    candidates(ids, "deployment")
}

/// Alias hosts.
pub fn aliases() -> Vec<CompletionCandidate> {
    candidates(state().aliases.into_keys(), "alias")
}

fn state() -> State {
    State::load(Path::new(".")).unwrap_or_default()
}

fn candidates(
    names: impl IntoIterator<Item = String>,
    what: &'static str,
) -> Vec<CompletionCandidate> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| CompletionCandidate::new(name).help(Some(what.into())))
        .collect()
}
