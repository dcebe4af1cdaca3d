//! `stack export`: an alias of this stack rendered as a production reverse-proxy config.
//!
//! - [`plan`]: resolves an alias (rules or plain) into what any proxy needs: its rules, in
//!   order, each pointing at an upstream (a service, a pinned deployment, a URL outside the
//!   stack) or at another path alias, and the addresses of each upstream.
//! - [`nginx`]: renders a plan as an nginx config and checks one with `nginx -t`.
//!
//! Addresses come from the running `stack up` when the caller has them ([`Running`]); without
//! one, each service gets its documented default port ([`default_port`]): `writer` 8090,
//! `reader` 8080 (the ports the demo services listen on when `PORT` is unset), any other
//! service `8100 + (FNV-1a of its name) % 800`, so the same name always gets the same port.
//! This module reads `.stack/state.json` through its caller and never changes it; only
//! [`nginx::check`] starts a process (`nginx -t`).

pub mod nginx;
pub mod plan;

pub use plan::{default_port, AliasRoutes, Plan, Project, RouteTarget, Running, Upstream};

/// Why an alias cannot be exported; nothing is written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no alias `{host}`")]
    NoAlias { host: String, known: Vec<String> },
    #[error("the stored rules of `{host}` no longer load:\n{errors}")]
    RulesDoNotLoad { host: String, errors: String },
    /// `rule` counts from 1; `place` is `file:line:column` or `(plain alias)`.
    #[error("{place}: rule {rule}: `{dest}` is not a service, deployment or alias of this stack (services: {services}; aliases: {aliases})")]
    UnresolvedDest {
        place: String,
        rule: usize,
        dest: String,
        services: String,
        aliases: String,
    },
    #[error("the aliases {} point at each other in a loop", .0.join(" -> "))]
    AliasLoop(Vec<String>),
    #[error("nginx is not installed (looked for `nginx` on PATH and in /usr/sbin)")]
    NginxMissing,
    #[error("`nginx -t` refused the config:\n{0}")]
    NginxRefused(String),
    #[error("cannot run `nginx -t`: {0}")]
    NginxRun(std::io::Error),
}
