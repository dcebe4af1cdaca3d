//! From what runs to what the proxy serves: a [`Snapshot`] of the supervisor plus the aliases
//! of `.stack/state.json` become a complete [`RoutingTable`] (RULES.md "dest"), built whole and
//! swapped in by the daemon after every change ([`super::aliases`]). Pure: no I/O, no processes.
//!
//! Hosts: `<deployment-id>.localhost` for every running deployment, `<service>.localhost` for
//! each service's current deployment, and every alias. A CRASHED deployment answers 503 JSON
//! naming its service, and so does a first deployment that waits for its `depends_on`, saying
//! for what; a `dest` whose deployment is gone answers 502 for that rule only.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;

use super::WaitingStart;
use crate::proxy::{self, HostRoute, RoutingTable, Target};
use crate::rules::Dest;
use crate::state::aliases::{owner_of, Alias, AliasTarget, HostOwner};
use crate::supervisor::{DeploymentState, LiveDeployment, Snapshot};

/// A `dest` that names nothing, for the error of `stack alias` against a running stack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host}: rule {rule}: `{dest}` {why} (running: {running})")]
pub struct UnresolvedDest {
    pub host: String,
    /// 1-based, as people count rules.
    pub rule: usize,
    pub dest: String,
    /// `is not a service, ...`, or what it is instead (a worker).
    pub why: String,
    pub running: String,
}

/// A routing table and what building it found worth saying (a now.sh fallback, a dest that
/// resolves to nothing).
#[derive(Default)]
pub struct Routes {
    pub table: RoutingTable,
    pub unresolved: Vec<UnresolvedDest>,
    pub notes: Vec<String>,
}

/// Builds the table. Unresolvable `dest`s become 502 targets and are listed in `unresolved`
/// (at `stack up` that is a warning; for a live alias change it is a refusal).
pub fn build(
    snapshot: &Snapshot,
    waiting_starts: &BTreeMap<String, WaitingStart>,
    aliases: &BTreeMap<String, Alias>,
) -> Routes {
    let mut built = Routes::default();
    let mut table = RoutingTable::new();
    // Not started yet: 503 until they are (a deployment that runs already is what it is).
    let waiting: Vec<(&String, &WaitingStart, Target)> = waiting_starts
        .iter()
        .filter(|(id, start)| {
            !start.worker && !snapshot.deployments.iter().any(|d| d.spec.id == **id)
        })
        .map(|(id, start)| {
            let target = Target::Unavailable {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "`{}` is starting: it waits for {}",
                    start.service,
                    start.on()
                ),
            };
            (id, start, target)
        })
        .collect();
    for (id, start, target) in &waiting {
        table.insert(
            &format!("{id}.localhost"),
            HostRoute::Target(target.clone()),
        );
        table.insert(
            &format!("{}.localhost", start.service),
            HostRoute::Target(target.clone()),
        );
    }
    let targets: Vec<(&LiveDeployment, Target)> = snapshot
        .deployments
        .iter()
        // A worker has no port: no host, no route.
        .filter(|deployment| !deployment.spec.settings.is_worker())
        .map(|deployment| (deployment, deployment_target(deployment)))
        .collect();
    for (deployment, target) in &targets {
        table.insert(
            &format!("{}.localhost", deployment.spec.id),
            HostRoute::Target(target.clone()),
        );
        if deployment.current {
            table.insert(
                &format!("{}.localhost", deployment.spec.service),
                HostRoute::Target(target.clone()),
            );
        }
    }
    let resolver = Resolver {
        targets: &targets,
        waiting: &waiting,
        aliases,
    };
    for (host, alias) in aliases {
        // An alias recorded before its host was a service's or a deployment's URL (offline)
        // never takes that URL over.
        if let Some(owner) = owner(snapshot, waiting_starts, host) {
            built
                .notes
                .push(format!("alias `{host}` is not served: {owner}"));
            continue;
        }
        let rules = match alias.rule_set() {
            Ok(rules) => Arc::new(rules),
            Err(errors) => {
                built
                    .notes
                    .push(format!("alias `{host}` is not valid any more: {errors}"));
                continue;
            }
        };
        let mut rule_targets = Vec::with_capacity(rules.rules().len());
        for rule in rules.rules() {
            let target = match resolver.resolve(&rule.dest, 0) {
                Some((target, note)) => {
                    built.notes.extend(
                        note.map(|note| format!("{host}: rule {}: {note}", rule.index + 1)),
                    );
                    target
                }
                None => {
                    let dest = rule.dest.to_string();
                    let bare = dest.to_ascii_lowercase();
                    let bare = bare.strip_suffix(".localhost").unwrap_or(&bare);
                    let worker = snapshot.deployments.iter().any(|deployment| {
                        deployment.spec.settings.is_worker()
                            && (deployment.spec.service == bare || deployment.spec.id == bare)
                    });
                    built.unresolved.push(UnresolvedDest {
                        host: host.clone(),
                        rule: rule.index + 1,
                        why: if worker {
                            "is a worker: it has no port, so no rule can send requests to it".into()
                        } else {
                            "is not a service, deployment or alias of this stack".into()
                        },
                        dest,
                        running: resolver.names(),
                    });
                    Target::Unavailable {
                        status: StatusCode::BAD_GATEWAY,
                        message: format!("`{}` is not running", rule.dest),
                    }
                }
            };
            rule_targets.push(target);
        }
        match HostRoute::rules(rules, rule_targets) {
            Ok(route) => table.insert(host, route),
            Err(error) => built.notes.push(format!("alias `{host}`: {error}")),
        }
    }
    built.table = table;
    built
}

/// What owns `host` among the running services and deployments, those waiting to start,
/// and the reserved host.
pub fn owner(
    snapshot: &Snapshot,
    waiting: &BTreeMap<String, WaitingStart>,
    host: &str,
) -> Option<HostOwner> {
    let deployments = &snapshot.deployments;
    owner_of(
        host,
        deployments
            .iter()
            .map(|running| running.spec.service.as_str())
            .chain(waiting.values().map(|start| start.service.as_str())),
        deployments
            .iter()
            .map(|running| running.spec.id.as_str())
            .chain(waiting.keys().map(String::as_str)),
    )
}

/// A deployment as a proxy target: its ready instances, or 503 when it crashed.
fn deployment_target(deployment: &LiveDeployment) -> Target {
    if deployment.state() == DeploymentState::Crashed {
        return Target::Unavailable {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "`{}` crashed ({}); see `stack logs {}`",
                deployment.spec.service, deployment.spec.id, deployment.spec.service
            ),
        };
    }
    let ready: Vec<Arc<proxy::Backend>> = deployment
        .instances
        .iter()
        .filter(|instance| instance.takes_traffic())
        .filter_map(|instance| instance.upstream())
        .collect();
    let n_starting = deployment
        .active()
        .filter(|instance| {
            !instance.takes_traffic()
                && !instance.crashed.load(std::sync::atomic::Ordering::Acquire)
        })
        .count();
    Target::Deployment(Arc::new(proxy::Deployment::new(
        deployment.spec.id.clone(),
        deployment.spec.service.clone(),
        ready,
        n_starting,
    )))
}

struct Resolver<'a> {
    targets: &'a [(&'a LiveDeployment, Target)],
    /// Web deployments waiting to start, as their 503.
    waiting: &'a [(&'a String, &'a WaitingStart, Target)],
    aliases: &'a BTreeMap<String, Alias>,
}

impl Resolver<'_> {
    /// RULES.md "dest", in order: service, deployment id, another alias, now.sh host, URL.
    fn resolve(&self, dest: &Dest, depth: usize) -> Option<(Target, Option<String>)> {
        match dest {
            Dest::External { scheme, authority } => Some((
                Target::External {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                },
                None,
            )),
            Dest::Local(name) => {
                let name = name.to_ascii_lowercase();
                let bare = name.strip_suffix(".localhost").unwrap_or(&name);
                if let Some(target) = self.service(bare).or_else(|| self.deployment(bare)) {
                    return Some((target, None));
                }
                // Another alias: a plain one resolves to its target; a path alias cannot be one
                // rule's single target. Depth guards against aliases pointing at each other.
                let alias = self
                    .aliases
                    .get(&name)
                    .or_else(|| self.aliases.get(&format!("{bare}.localhost")))?;
                match &alias.target {
                    AliasTarget::Plain { target } if depth < 8 => {
                        let dest = Dest::parse(target).ok()?;
                        self.resolve(&dest, depth + 1)
                    }
                    _ => None,
                }
            }
            Dest::NowSh { host, service } => {
                let label = host.strip_suffix(".now.sh").unwrap_or(host);
                if let Some(target) = self.deployment(label) {
                    return Some((target, None));
                }
                let target = self.service(service)?;
                Some((
                    target,
                    Some(format!("`{host}` is a now.sh deployment; using the current deployment of `{service}`")),
                ))
            }
        }
    }

    fn service(&self, name: &str) -> Option<Target> {
        self.targets
            .iter()
            .find(|(deployment, _)| deployment.current && deployment.spec.service == name)
            .map(|(_, target)| target.clone())
            .or_else(|| {
                self.waiting
                    .iter()
                    .find(|(_, start, _)| start.service == name)
                    .map(|(_, _, target)| target.clone())
            })
    }

    fn deployment(&self, id: &str) -> Option<Target> {
        self.targets
            .iter()
            .find(|(deployment, _)| deployment.spec.id == id)
            .map(|(_, target)| target.clone())
            .or_else(|| {
                self.waiting
                    .iter()
                    .find(|(waiting, _, _)| **waiting == id)
                    .map(|(_, _, target)| target.clone())
            })
    }

    fn names(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for (deployment, _) in self.targets {
            if deployment.current {
                names.push(deployment.spec.service.clone());
            }
            names.push(deployment.spec.id.clone());
        }
        names.extend(self.aliases.keys().cloned());
        if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        }
    }
}
