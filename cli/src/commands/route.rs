//! `stack route <host> <METHOD> <path>`: explain a routing decision the way the proxy makes it:
//! the normalised path, the rule that serves the request (or 404, or 400 for a refused path),
//! and the form of its `dest`. It reads the stored alias; it never sends a request.

use std::path::Path;
use std::process::ExitCode;

use http::Method;

use crate::args::RouteArgs;
use crate::output::{self, CliError, CliResult};
use crate::rules::normalize_path;
use crate::state::aliases::{normalize_host, AliasTarget};
use crate::state::State;

pub fn run(project_dir: &Path, args: RouteArgs) -> CliResult<ExitCode> {
    let host = normalize_host(&args.host).map_err(|error| {
        CliError::new(error.to_string()).hint("Use a host name such as `counter-demo.localhost`.")
    })?;
    let method = Method::from_bytes(args.method.as_bytes()).map_err(|_| {
        CliError::new(format!("`{}` is not an HTTP method", args.method))
            .hint("Use a method such as GET, POST or DELETE.")
    })?;
    let state = State::load(project_dir).map_err(|error| CliError::new(error.to_string()))?;
    let alias = super::alias::find(&state, &host)?;
    let rules = alias.rule_set().map_err(|errors| {
        CliError::new(format!(
            "the stored rules of `{host}` no longer load:\n{errors}"
        ))
        .hint(format!(
            "Set them again with `stack alias {host} --rules <file>`."
        ))
    })?;

    // Only the path takes part: the query string and fragment are split off as the proxy does.
    let target = args.path.split('#').next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    output::info(format!("{method} {} on {host}", args.path));
    let normalized = match normalize_path(path) {
        Ok(normalized) => normalized,
        Err(reason) => {
            println!("  path    `{path}` is refused: {reason}");
            println!("  answer  400 Bad Request");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut notes = Vec::new();
    if normalized != path {
        notes.push(format!("normalised from `{path}`"));
    }
    if query.is_some() {
        notes.push("the query string takes no part".to_string());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    println!("  path    {normalized}{notes}");
    if is_lowercase_known(&method) {
        println!(
            "  method  `{method}` is not `{}`: methods are case-sensitive on the wire, so only rules without `method` match it",
            method.as_str().to_ascii_uppercase()
        );
    }

    let Some(index) = rules.route(&method, &normalized) else {
        println!("  rule    no rule matches: 404");
        return Ok(ExitCode::SUCCESS);
    };
    let rule = &rules.rules()[index];
    let place = match &alias.target {
        AliasTarget::Rules { file, .. } => {
            format!(" ({file}:{}:{})", rule.position.line, rule.position.column)
        }
        AliasTarget::Plain { .. } => " (plain alias)".into(),
    };
    println!(
        "  rule    {}: pathname {}, method {}{place}",
        index + 1,
        rule.pathname_display(),
        rule.methods_display()
    );
    println!("  dest    {}", rule.dest.describe());
    Ok(ExitCode::SUCCESS)
}

/// `get`, `post`: a registry method written in lower case, which HTTP treats as unknown.
fn is_lowercase_known(method: &Method) -> bool {
    let name = method.as_str();
    name.bytes().any(|b| b.is_ascii_lowercase())
        && crate::rules::is_known_method(&name.to_ascii_uppercase())
}
