//! A saved `stack.toml` applied to the running stack: [`plan`] compares the services `stack up`
//! runs with the ones the file now declares, and says what each difference costs. A change to
//! how a service builds or runs (`path`, `build`, `run`, `kind`, `health`, `env`, `env_file`,
//! `stop_signal`, `stop_timeout`, `restart`) makes a new deployment of it, swapped in as a save
//! of its code is (no failed request); `instances` alone scales the live deployment; a new
//! service starts once what it depends on is ready; a service no longer declared stops;
//! `watch`, `ignore`, `path` and `env_file` restart the watcher; `depends_on` reorders `stack down`.
//! Services that did not change are not touched.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::supervisor::build::{Service, ServiceKind};

/// What a saved `stack.toml` changes, service by service, in start order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Services that get a new deployment, each with the settings that changed.
    pub redeploy: Vec<(String, Vec<&'static str>)>,
    /// Services whose `instances` changed (a redeployed one starts with that many).
    pub rescale: BTreeMap<String, usize>,
    /// Services declared now that do not run yet.
    pub added: Vec<String>,
    /// Services that run but are no longer declared.
    pub removed: Vec<String>,
    /// The watched paths changed (`path`, `watch`, `ignore`, or the set of services).
    pub rewatch: bool,
    /// `depends_on` changed somewhere: the stop order is made again.
    pub reorder: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }

    /// One line for the terminal: "new deployments of `stats` (run, health); `reader` scales
    /// to 3; `queue` starts; `legacy` stops".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (service, settings) in &self.redeploy {
            parts.push(format!(
                "a new deployment of `{service}` ({})",
                settings.join(", ")
            ));
        }
        for (service, instances) in &self.rescale {
            if !self.redeploys(service) {
                parts.push(format!("`{service}` scales to {instances}"));
            }
        }
        parts.extend(
            self.added
                .iter()
                .map(|service| format!("`{service}` starts")),
        );
        parts.extend(
            self.removed
                .iter()
                .map(|service| format!("`{service}` stops (no longer declared)")),
        );
        if parts.is_empty() {
            parts.push(if self.reorder {
                "the stop order".to_string()
            } else {
                "what is watched".to_string()
            });
        }
        parts.join("; ")
    }

    pub fn redeploys(&self, service: &str) -> bool {
        self.redeploy.iter().any(|(name, _)| name == service)
    }

    /// Whether `service` is built: a new deployment of it, or it is new.
    pub fn builds(&self, service: &str) -> bool {
        self.redeploys(service) || self.added.iter().any(|name| name == service)
    }
}

/// What changes from `running` to `declared` (both as [`crate::config::services`] gives them,
/// in start order).
pub fn plan(running: &[Service], declared: &[Service]) -> Plan {
    let mut plan = Plan::default();
    for new in declared {
        let Some(old) = running.iter().find(|old| old.name == new.name) else {
            plan.added.push(new.name.clone());
            plan.rewatch = true;
            plan.reorder |= !new.depends_on.is_empty();
            continue;
        };
        let changed = changed_run_settings(old, new);
        if !changed.is_empty() {
            plan.redeploy.push((new.name.clone(), changed));
        }
        if old.instances != new.instances {
            plan.rescale
                .insert(new.name.clone(), new.instances.unwrap_or(1));
        }
        plan.rewatch |= old.dir != new.dir
            || old.watch != new.watch
            || old.ignore != new.ignore
            || old.env_file != new.env_file;
        plan.reorder |= old.depends_on != new.depends_on;
    }
    for old in running {
        if !declared.iter().any(|new| new.name == old.name) {
            plan.removed.push(old.name.clone());
            plan.rewatch = true;
            plan.reorder |= !old.depends_on.is_empty();
        }
    }
    plan
}

/// The settings whose change makes a new deployment, by their `stack.toml` names.
fn changed_run_settings(old: &Service, new: &Service) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.dir != new.dir {
        changed.push("path");
    }
    match (&old.kind, &new.kind) {
        (
            ServiceKind::Command {
                build: old_build,
                run: old_run,
            },
            ServiceKind::Command {
                build: new_build,
                run: new_run,
            },
        ) => {
            if old_build != new_build {
                changed.push("build");
            }
            if old_run != new_run {
                changed.push("run");
            }
        }
        (old_kind, new_kind) if old_kind != new_kind => changed.extend(["build", "run"]),
        _ => {}
    }
    let (old, new) = (&old.settings, &new.settings);
    let settings = [
        ("kind", old.kind != new.kind),
        ("health", old.health != new.health),
        ("env", old.env != new.env),
        ("stop_signal", old.stop_signal != new.stop_signal),
        ("stop_timeout", old.stop_timeout != new.stop_timeout),
        ("restart", old.restart != new.restart),
    ];
    changed.extend(
        settings
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| name),
    );
    changed
}

/// The stop order, shared by the start, the watcher (a `stack.toml` save changes it) and the
/// shutdown.
pub type StopOrder = Arc<Mutex<Vec<String>>>;

/// `stack down`'s order: dependents before what they depend on. Empty when nothing depends on
/// anything, so that everything stops at once.
pub fn stop_order(services: &[Service]) -> Vec<String> {
    if services.iter().all(|service| service.depends_on.is_empty()) {
        return Vec::new();
    }
    services
        .iter()
        .rev()
        .map(|service| service.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::model::CommandLine;
    use crate::config::model::Condition;
    use crate::supervisor::RunSettings;

    fn declared(name: &str, run: &str) -> Service {
        Service {
            name: name.into(),
            dir: PathBuf::from("/project/services").join(name),
            kind: ServiceKind::Command {
                build: None,
                run: CommandLine::Shell(run.into()),
            },
            settings: RunSettings::default(),
            instances: None,
            depends_on: BTreeMap::new(),
            watch: Vec::new(),
            ignore: Vec::new(),
            env_file: None,
            build_at: None,
            run_at: None,
        }
    }

    #[test]
    fn the_same_services_change_nothing() {
        let services = vec![
            declared("api", "python3 app.py"),
            declared("web", "npm run dev"),
        ];
        assert!(plan(&services, &services.clone()).is_empty());
    }

    #[test]
    fn a_changed_run_or_setting_redeploys_only_that_service() {
        let running = vec![
            declared("api", "python3 app.py"),
            declared("web", "npm run dev"),
        ];
        let mut now = running.clone();
        now[0].kind = ServiceKind::Command {
            build: Some(CommandLine::Shell("make".into())),
            run: CommandLine::Shell("python3 app.py --fast".into()),
        };
        now[0]
            .settings
            .env
            .insert("LOG_LEVEL".into(), "debug".into());
        now[0].settings.stop_timeout = Duration::from_secs(3);
        let plan = plan(&running, &now);
        assert_eq!(
            plan.redeploy,
            vec![(
                "api".to_string(),
                vec!["build", "run", "env", "stop_timeout"]
            )]
        );
        assert!(plan.rescale.is_empty() && plan.added.is_empty() && plan.removed.is_empty());
        assert!(!plan.rewatch && !plan.reorder);
        assert_eq!(
            plan.summary(),
            "a new deployment of `api` (build, run, env, stop_timeout)"
        );
    }

    #[test]
    fn instances_alone_scale_and_with_a_redeploy_size_it() {
        let running = vec![declared("api", "a"), declared("web", "b")];
        let mut now = running.clone();
        now[0].instances = Some(3);
        now[1].instances = Some(2);
        now[1].kind = ServiceKind::Command {
            build: None,
            run: CommandLine::Shell("c".into()),
        };
        let plan = plan(&running, &now);
        assert_eq!(
            plan.rescale,
            BTreeMap::from([("api".to_string(), 3), ("web".to_string(), 2)])
        );
        assert_eq!(
            plan.summary(),
            "a new deployment of `web` (run); `api` scales to 3"
        );
        // Taking `instances` out of the file goes back to one.
        let back = super::plan(&now, &running);
        assert_eq!(back.rescale["api"], 1);
    }

    #[test]
    fn added_and_removed_services_start_stop_and_rewatch() {
        let running = vec![declared("api", "a"), declared("legacy", "b")];
        let mut queue = declared("queue", "c");
        queue.depends_on.insert("api".into(), Condition::Healthy);
        let now = vec![running[0].clone(), queue];
        let plan = plan(&running, &now);
        assert_eq!(plan.added, vec!["queue"]);
        assert_eq!(plan.removed, vec!["legacy"]);
        assert!(plan.rewatch && plan.reorder);
        assert_eq!(
            plan.summary(),
            "`queue` starts; `legacy` stops (no longer declared)"
        );
    }

    #[test]
    fn watch_globs_and_dependencies_change_no_deployment() {
        let running = vec![declared("api", "a"), declared("web", "b")];
        let mut now = running.clone();
        now[0].watch = vec!["services/api/**/*.py".into()];
        let watch = plan(&running, &now);
        assert!(watch.redeploy.is_empty() && watch.rewatch && !watch.reorder);
        assert_eq!(watch.summary(), "what is watched");
        let mut now = running.clone();
        now[1].depends_on.insert("api".into(), Condition::Started);
        let order = plan(&running, &now);
        assert!(order.redeploy.is_empty() && !order.rewatch && order.reorder);
        assert_eq!(stop_order(&now), vec!["web", "api"]);
        assert!(stop_order(&running).is_empty());
    }
}
