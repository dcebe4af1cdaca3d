//! The `aliases` section of the state file: alias host to what it points at. This module owns
//! the record's shape and the rules for a valid alias host; it never reads the rules file from
//! disk (the record carries its text) and never talks to a running `stack up`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rules::{RuleFileErrors, RuleSet};

/// What an alias points at, and when it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    #[serde(flatten)]
    pub target: AliasTarget,
    /// When the alias was set, in milliseconds since the Unix epoch.
    pub created: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AliasTarget {
    /// A plain alias: a service, a deployment id or another alias, as the user wrote it.
    Plain { target: String },
    /// A path alias: the file's name, and its rules as `RuleSet::to_json` writes them (not the
    /// file's text: a file padded to megabytes stores only its rules), so `stack up` rebuilds
    /// the rules without the original file.
    Rules {
        file: String,
        text: String,
        /// Where each rule starts in the original file (line, column), so messages about a
        /// rule still point into that file; empty for a record that kept the file's text.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        positions: Vec<[usize; 2]>,
    },
}

impl Alias {
    pub fn new(target: AliasTarget) -> Alias {
        Alias {
            target,
            created: now_millis(),
        }
    }

    /// The alias as rules: its file, or one fallthrough rule for a plain alias.
    pub fn rule_set(&self) -> Result<RuleSet, RuleFileErrors> {
        match &self.target {
            AliasTarget::Plain { target } => {
                let text = serde_json::json!({ "rules": [{ "dest": target }] }).to_string();
                RuleSet::parse("(plain alias)", &text).map(|loaded| loaded.rules)
            }
            AliasTarget::Rules {
                file,
                text,
                positions,
            } => RuleSet::parse(file, text).map(|loaded| loaded.rules.at_positions(positions)),
        }
    }

    /// The `source` column of `stack alias ls`: the target, or `[N rules]`.
    pub fn source(&self) -> String {
        match &self.target {
            AliasTarget::Plain { target } => target.clone(),
            AliasTarget::Rules { .. } => match self.rule_set() {
                Ok(rules) => format!("[{}]", plural(rules.rules().len(), "rule")),
                Err(_) => "[invalid rules]".into(),
            },
        }
    }
}

/// `1 rule`, `4 rules`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("`{0}` is a URL; an alias is a host name")]
    Url(String),
    #[error("`{0}` has a port; an alias is a host name (the port is the proxy's)")]
    Port(String),
    #[error(
        "`{0}` is not a valid host name (labels of letters, digits and `-`, separated by `.`)"
    )]
    Invalid(String),
}

/// The host the dashboard will answer on: no project can alias it.
pub const RESERVED_HOST: &str = "stack.localhost";

/// What owns a host name already, so no alias may take it over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostOwner {
    #[error("`{RESERVED_HOST}` is reserved for stack's own dashboard")]
    Reserved,
    #[error("`{host}` is the URL of the service `{service}`")]
    Service { host: String, service: String },
    #[error("`{host}` is the URL of the deployment `{deployment}`")]
    Deployment { host: String, deployment: String },
}

/// Who owns `host` (a normalised alias host) among the reserved host, the `services` and the
/// `deployments` (ids) of the project, if anyone.
pub fn owner_of<'a>(
    host: &str,
    services: impl IntoIterator<Item = &'a str>,
    deployments: impl IntoIterator<Item = &'a str>,
) -> Option<HostOwner> {
    if host == RESERVED_HOST {
        return Some(HostOwner::Reserved);
    }
    let label = host.strip_suffix(".localhost")?;
    if let Some(service) = services.into_iter().find(|service| *service == label) {
        return Some(HostOwner::Service {
            host: host.into(),
            service: service.into(),
        });
    }
    deployments
        .into_iter()
        .find(|deployment| *deployment == label)
        .map(|deployment| HostOwner::Deployment {
            host: host.into(),
            deployment: deployment.into(),
        })
}

/// The key an alias is stored under: lower case, and a single label gets `.localhost`
/// (`counter-demo` is `counter-demo.localhost`, as now made `my-app` into `my-app.now.sh`),
/// except `localhost` itself, which is taken literally.
pub fn normalize_host(host: &str) -> Result<String, HostError> {
    if host.contains("://") {
        return Err(HostError::Url(host.into()));
    }
    if host.contains(':') {
        return Err(HostError::Port(host.into()));
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return Err(HostError::Invalid(host));
    }
    Ok(if host.contains('.') || host == "localhost" {
        host
    } else {
        format!("{host}.localhost")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            normalize_host("Counter-Demo.LocalHost").as_deref(),
            Ok("counter-demo.localhost")
        );
        assert_eq!(
            normalize_host("counter-demo").as_deref(),
            Ok("counter-demo.localhost")
        );
        assert_eq!(normalize_host("a.test.").as_deref(), Ok("a.test"));
        assert_eq!(normalize_host("LocalHost").as_deref(), Ok("localhost"));
        assert!(matches!(
            normalize_host("http://a.localhost"),
            Err(HostError::Url(_))
        ));
        assert!(matches!(
            normalize_host("a.localhost:3000"),
            Err(HostError::Port(_))
        ));
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a_b.localhost",
            "a/b",
            "é.localhost",
        ] {
            assert!(
                matches!(normalize_host(bad), Err(HostError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_service_a_deployment_or_the_dashboard_own_their_hosts() {
        let owner = |host| owner_of(host, ["writer"], ["writer-abcdefghij"]);
        assert_eq!(owner("stack.localhost"), Some(HostOwner::Reserved));
        assert!(matches!(
            owner("writer.localhost"),
            Some(HostOwner::Service { .. })
        ));
        assert!(matches!(
            owner("writer-abcdefghij.localhost"),
            Some(HostOwner::Deployment { .. })
        ));
        for free in [
            "counter-demo.localhost",
            "writer.test",
            "localhost",
            "a.writer.localhost",
        ] {
            assert_eq!(owner(free), None, "{free}");
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let alias = Alias::new(AliasTarget::Rules {
            file: "aliases.json".into(),
            text: "{\"rules\": [{\"dest\": \"reader\"}]}".into(),
            positions: Vec::new(),
        });
        let json = serde_json::to_value(&alias).unwrap();
        assert_eq!(json["kind"], "rules");
        assert_eq!(serde_json::from_value::<Alias>(json).unwrap(), alias);
        assert_eq!(alias.source(), "[1 rule]");
        let plain = Alias::new(AliasTarget::Plain {
            target: "writer".into(),
        });
        assert_eq!(
            plain.rule_set().unwrap().rules()[0].dest.to_string(),
            "writer"
        );
    }
}
