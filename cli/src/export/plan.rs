//! From an alias to a proxy-neutral plan: every rule of the alias (and of the path aliases it
//! reaches) with where it goes, and one upstream per service, deployment or outside URL reached.
//!
//! A rule's `dest` resolves as RULES.md says, in order: a service of the project (a directory
//! under `services/` with a binary or a `package.json`), a deployment id (`writer-gkdldldejq`,
//! with or without `.localhost`) of such a service, another alias (a plain alias is followed to
//! its target; a path alias becomes a nested set of rules), an old `*.now.sh` host (its service,
//! with a warning), or a URL outside the stack (proxied as is).

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use crate::rules::{Dest, RuleSet};
use crate::state::aliases::{normalize_host, AliasTarget};
use crate::state::State;

use super::ExportError;

/// The addresses of the running `stack up`'s ready instances.
#[derive(Debug, Clone, Default)]
pub struct Running {
    /// Service name to its current deployment's instances.
    pub services: BTreeMap<String, Vec<SocketAddr>>,
    /// Deployment id to its instances.
    pub deployments: BTreeMap<String, Vec<SocketAddr>>,
}

/// What the plan is made from.
#[derive(Debug)]
pub struct Project<'a> {
    pub state: &'a State,
    /// The project's services, by directory name.
    pub services: Vec<String>,
    /// `None` when no `stack up` is running: default ports are used.
    pub running: Option<&'a Running>,
}

impl<'a> Project<'a> {
    /// The services of the project at `project_dir`: directories under `services/` with a
    /// `src/main.rs`, a `src/bin/` or a `package.json` (a library such as `session` is not one),
    /// and those `stack.toml` declares.
    pub fn find_services(project_dir: &Path) -> Vec<String> {
        let Ok(entries) = fs::read_dir(project_dir.join("services")) else {
            return Vec::new();
        };
        let mut services: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let dir = entry.path();
                dir.join("src/main.rs").is_file()
                    || dir.join("src/bin").is_dir()
                    || dir.join("package.json").is_file()
            })
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        // Declared in `stack.toml` (a Python service, say) counts too.
        services.extend(crate::config::service_names(project_dir));
        services.sort();
        services.dedup();
        services
    }
}

/// The exported alias, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `aliases[0]` is the exported alias; the rest are path aliases its rules point at.
    pub aliases: Vec<AliasRoutes>,
    pub upstreams: Vec<Upstream>,
    /// Things worth telling the user (a now.sh dest mapped to a service, ...).
    pub warnings: Vec<String>,
    /// Whether addresses came from a running `stack up`.
    pub from_running: bool,
}

/// One alias's rules and where each one goes.
#[derive(Debug, Clone)]
pub struct AliasRoutes {
    pub host: String,
    /// `aliases.json` for a path alias, `(plain alias)` for a plain one.
    pub source: String,
    pub rules: RuleSet,
    /// By rule index.
    pub targets: Vec<RouteTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// An index into [`Plan::upstreams`].
    Upstream(usize),
    /// An index into [`Plan::aliases`]: that alias's rules decide.
    Alias(usize),
}

/// A group of servers one rule (or several) sends requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// A name unique in the plan, usable as an nginx upstream name (`stack-writer`).
    pub name: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host:port` each.
    pub servers: Vec<String>,
    /// The `Host` header it expects: `None` for the stack's own services (any host will do),
    /// the authority for a URL outside the stack.
    pub host_header: Option<String>,
    /// What it is, for a comment (`service writer: ...`).
    pub description: String,
}

/// The port a service listens on when nothing says otherwise (see the module docs).
pub fn default_port(service: &str) -> u16 {
    match service {
        "writer" => 8090,
        "reader" => 8080,
        other => {
            // FNV-1a: stable across versions and platforms, unlike std's hasher.
            let hash = other.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
            8100 + (hash % 800) as u16
        }
    }
}

impl Plan {
    /// Resolves the alias `host` (already normalised) of `project`.
    pub fn new(project: &Project<'_>, host: &str) -> Result<Plan, ExportError> {
        let mut builder = Builder {
            project,
            plan: Plan {
                aliases: Vec::new(),
                upstreams: Vec::new(),
                warnings: Vec::new(),
                from_running: project.running.is_some(),
            },
            visiting: Vec::new(),
        };
        builder.path_alias(host)?;
        Ok(builder.plan)
    }
}

struct Builder<'p, 'a> {
    project: &'p Project<'a>,
    plan: Plan,
    /// Aliases being resolved, outermost first: a repeat is a loop.
    visiting: Vec<String>,
}

impl Builder<'_, '_> {
    /// Adds `host`'s rules as an [`AliasRoutes`] (once) and returns its index.
    fn path_alias(&mut self, host: &str) -> Result<usize, ExportError> {
        // A path alias reached again while its own rules are being resolved is a loop (a
        // request could go round forever); reached again from elsewhere, it is shared.
        self.enter(host)?;
        self.visiting.pop();
        if let Some(index) = self.plan.aliases.iter().position(|a| a.host == host) {
            return Ok(index);
        }
        let alias = self
            .project
            .state
            .aliases
            .get(host)
            .ok_or_else(|| ExportError::NoAlias {
                host: host.to_string(),
                known: self.project.state.aliases.keys().cloned().collect(),
            })?;
        let rules = alias
            .rule_set()
            .map_err(|errors| ExportError::RulesDoNotLoad {
                host: host.to_string(),
                errors: errors.to_string(),
            })?;
        let source = match &alias.target {
            AliasTarget::Rules { file, .. } => file.clone(),
            AliasTarget::Plain { .. } => "(plain alias)".into(),
        };
        self.enter(host)?;
        let index = self.plan.aliases.len();
        self.plan.aliases.push(AliasRoutes {
            host: host.to_string(),
            source: source.clone(),
            rules: rules.clone(),
            targets: Vec::new(),
        });
        let mut targets = Vec::with_capacity(rules.rules().len());
        for rule in rules.rules() {
            let place = match &alias.target {
                AliasTarget::Rules { file, .. } => {
                    format!("{file}:{}:{}", rule.position.line, rule.position.column)
                }
                AliasTarget::Plain { .. } => format!("{host} (plain alias)"),
            };
            targets.push(self.dest(&rule.dest, &place, rule.index + 1)?);
        }
        self.plan.aliases[index].targets = targets;
        self.visiting.pop();
        Ok(index)
    }

    fn enter(&mut self, host: &str) -> Result<(), ExportError> {
        if let Some(start) = self.visiting.iter().position(|h| h == host) {
            let mut cycle = self.visiting[start..].to_vec();
            cycle.push(host.to_string());
            return Err(ExportError::AliasLoop(cycle));
        }
        self.visiting.push(host.to_string());
        Ok(())
    }

    fn dest(&mut self, dest: &Dest, place: &str, rule: usize) -> Result<RouteTarget, ExportError> {
        match dest {
            Dest::External { scheme, authority } => {
                let scheme = if scheme.as_str() == "https" {
                    "https"
                } else {
                    "http"
                };
                let port = authority
                    .port_u16()
                    .unwrap_or(if scheme == "https" { 443 } else { 80 });
                let host = authority.host();
                let name = format!(
                    "ext-{}-{port}",
                    host.trim_matches(['[', ']'])
                        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-")
                );
                Ok(RouteTarget::Upstream(self.upstream(Upstream {
                    name,
                    scheme,
                    servers: vec![format!("{host}:{port}")],
                    host_header: Some(authority.to_string()),
                    description: format!("`{scheme}://{authority}`, outside the stack"),
                })))
            }
            Dest::NowSh { host, service } => {
                if self.project.services.contains(service) {
                    self.plan.warnings.push(format!(
                        "{place}: rule {rule}: `{host}` is a now.sh deployment; it goes to the service `{service}`"
                    ));
                    Ok(RouteTarget::Upstream(self.service(service)))
                } else {
                    Err(self.unresolved(place, rule, host))
                }
            }
            Dest::Local(name) => self.local(name, place, rule),
        }
    }

    fn local(&mut self, name: &str, place: &str, rule: usize) -> Result<RouteTarget, ExportError> {
        let lower = name.to_ascii_lowercase();
        if self.project.services.contains(&lower) {
            return Ok(RouteTarget::Upstream(self.service(&lower)));
        }
        let bare = lower.strip_suffix(".localhost").unwrap_or(&lower);
        if let Some(service) = deployment_service(bare) {
            if self.project.services.iter().any(|s| s == service) {
                return Ok(RouteTarget::Upstream(self.deployment(bare, service)));
            }
        }
        if let Ok(host) = normalize_host(&lower) {
            if let Some(alias) = self.project.state.aliases.get(&host) {
                return match &alias.target {
                    AliasTarget::Plain { target } => {
                        self.enter(&host)?;
                        let target = target.clone();
                        let resolved = Dest::parse(&target)
                            .map_err(|_| self.unresolved(place, rule, &target))
                            .and_then(|dest| self.dest(&dest, place, rule));
                        self.visiting.pop();
                        resolved
                    }
                    AliasTarget::Rules { .. } => Ok(RouteTarget::Alias(self.path_alias(&host)?)),
                };
            }
        }
        Err(self.unresolved(place, rule, name))
    }

    fn unresolved(&self, place: &str, rule: usize, dest: &str) -> ExportError {
        let or_none = |items: Vec<String>| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(", ")
            }
        };
        ExportError::UnresolvedDest {
            place: place.to_string(),
            rule,
            dest: dest.to_string(),
            services: or_none(self.project.services.clone()),
            aliases: or_none(self.project.state.aliases.keys().cloned().collect()),
        }
    }

    fn service(&mut self, service: &str) -> usize {
        let running = self
            .project
            .running
            .and_then(|running| running.services.get(service))
            .filter(|addresses| !addresses.is_empty());
        let (servers, how) = match running {
            Some(addresses) => (
                addresses.iter().map(ToString::to_string).collect(),
                "its running instances".to_string(),
            ),
            None => (
                vec![format!("127.0.0.1:{}", default_port(service))],
                "its default port; point it at where the service runs".to_string(),
            ),
        };
        self.upstream(Upstream {
            name: format!("stack-{service}"),
            scheme: "http",
            servers,
            host_header: None,
            description: format!("service `{service}`: {how}"),
        })
    }

    fn deployment(&mut self, deployment: &str, service: &str) -> usize {
        let running = self
            .project
            .running
            .and_then(|running| running.deployments.get(deployment))
            .filter(|addresses| !addresses.is_empty());
        let (servers, how) = match running {
            Some(addresses) => (
                addresses.iter().map(ToString::to_string).collect(),
                "its running instances".to_string(),
            ),
            None => (
                vec![format!("127.0.0.1:{}", default_port(service))],
                format!("not running; the default port of `{service}`"),
            ),
        };
        self.upstream(Upstream {
            name: format!("stack-{deployment}"),
            scheme: "http",
            servers,
            host_header: None,
            description: format!("deployment `{deployment}` (pinned): {how}"),
        })
    }

    /// Adds an upstream unless one with that name exists; its index either way.
    fn upstream(&mut self, upstream: Upstream) -> usize {
        match self
            .plan
            .upstreams
            .iter()
            .position(|u| u.name == upstream.name)
        {
            Some(index) => index,
            None => {
                self.plan.upstreams.push(upstream);
                self.plan.upstreams.len() - 1
            }
        }
    }
}

/// `writer-gkdldldejq` is a deployment of `writer`: `<service>-<10 lowercase letters>`.
fn deployment_service(name: &str) -> Option<&str> {
    let (service, id) = name.rsplit_once('-')?;
    (id.len() == 10 && id.bytes().all(|b| b.is_ascii_lowercase()) && !service.is_empty())
        .then_some(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Alias;

    fn state(aliases: &[(&str, AliasTarget)]) -> State {
        let mut state = State::default();
        for (host, target) in aliases {
            state
                .aliases
                .insert(host.to_string(), Alias::new(target.clone()));
        }
        state
    }

    fn rules(text: &str) -> AliasTarget {
        AliasTarget::Rules {
            file: "rules.json".into(),
            text: text.into(),
            positions: Vec::new(),
        }
    }

    fn project(state: &State) -> Project<'_> {
        Project {
            state,
            services: vec!["reader".into(), "writer".into()],
            running: None,
        }
    }

    #[test]
    fn default_ports_are_fixed_and_stable() {
        assert_eq!(default_port("writer"), 8090);
        assert_eq!(default_port("reader"), 8080);
        assert_eq!(default_port("api"), default_port("api"));
        assert!((8100..8900).contains(&default_port("api")));
        assert_ne!(default_port("api"), default_port("web"));
    }

    #[test]
    fn every_form_of_dest() {
        let state = state(&[
            (
                "app.localhost",
                rules(
                    r#"{"rules":[
                    {"pathname":"/a","dest":"writer"},
                    {"pathname":"/b","dest":"writer-abcdefghij.localhost"},
                    {"pathname":"/c","dest":"http://127.0.0.1:9000"},
                    {"pathname":"/d","dest":"api"},
                    {"pathname":"/e","dest":"short.localhost"},
                    {"pathname":"/f","dest":"reader-oldoldoldx.now.sh"},
                    {"dest":"reader"}]}"#,
                ),
            ),
            (
                "api.localhost",
                rules(r#"{"rules":[{"pathname":"/d","method":"GET","dest":"writer"}]}"#),
            ),
            (
                "short.localhost",
                AliasTarget::Plain {
                    target: "reader".into(),
                },
            ),
        ]);
        let plan = Plan::new(&project(&state), "app.localhost").unwrap();
        let names: Vec<&str> = plan.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "stack-writer",
                "stack-writer-abcdefghij",
                "ext-127.0.0.1-9000",
                "stack-reader"
            ]
        );
        assert_eq!(plan.upstreams[0].servers, ["127.0.0.1:8090"]);
        assert_eq!(
            plan.upstreams[2].host_header.as_deref(),
            Some("127.0.0.1:9000")
        );
        let targets = &plan.aliases[0].targets;
        assert_eq!(targets[3], RouteTarget::Alias(1));
        assert_eq!(targets[4], RouteTarget::Upstream(3));
        assert_eq!(targets[5], RouteTarget::Upstream(3));
        assert_eq!(plan.aliases[1].host, "api.localhost");
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    }

    #[test]
    fn running_instances_win_over_default_ports() {
        let state = state(&[(
            "w.localhost",
            AliasTarget::Plain {
                target: "writer".into(),
            },
        )]);
        let running = Running {
            services: [(
                "writer".to_string(),
                vec![
                    "127.0.0.1:4001".parse().unwrap(),
                    "127.0.0.1:4002".parse().unwrap(),
                ],
            )]
            .into(),
            deployments: BTreeMap::new(),
        };
        let mut project = project(&state);
        project.running = Some(&running);
        let plan = Plan::new(&project, "w.localhost").unwrap();
        assert_eq!(
            plan.upstreams[0].servers,
            ["127.0.0.1:4001", "127.0.0.1:4002"]
        );
        assert!(plan.from_running);
    }

    #[test]
    fn unresolved_dests_and_loops_are_errors() {
        let state = state(&[
            (
                "a.localhost",
                rules(r#"{"rules":[{"dest":"b.localhost"}]}"#),
            ),
            (
                "b.localhost",
                rules(r#"{"rules":[{"pathname":"/x","dest":"a"}]}"#),
            ),
            (
                "c.localhost",
                rules("{\"rules\":[\n  {\"dest\":\"nothing\"}]}"),
            ),
        ]);
        let error = Plan::new(&project(&state), "a.localhost").unwrap_err();
        assert_eq!(
            error.to_string(),
            "the aliases a.localhost -> b.localhost -> a.localhost point at each other in a loop"
        );
        let error = Plan::new(&project(&state), "c.localhost").unwrap_err();
        assert_eq!(
            error.to_string(),
            "rules.json:2:3: rule 1: `nothing` is not a service, deployment or alias of this stack (services: reader, writer; aliases: a.localhost, b.localhost, c.localhost)"
        );
        assert!(matches!(
            Plan::new(&project(&state), "d.localhost"),
            Err(ExportError::NoAlias { .. })
        ));
    }
}
