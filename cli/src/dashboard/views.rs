//! The dashboard's reads (route explainer, sessions, environment) and its actions, each
//! through the daemon call the CLI makes (`stack route`'s matcher, `stack redis`'s inspector,
//! `stack scale`, `stack rollback`, `stack rm`, `stack redis del`).
//!
//! Sessions are named by the first 8 characters of their id only: the page never gets a full
//! id, so deleting one finds the single stored session with that prefix (two sharing it: 409).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use session::redis_url::RedisUrl;

use super::{refusal, ActionBody, Dashboard, QueryParams};
use crate::control::api::{RestartRequest, RollbackRequest, ScaleRequest};
use crate::control::server::status_of;
use crate::daemon::DaemonError;
use crate::redis::inspect::{Entry, Inspector};
use crate::rules::normalize_path;
use crate::state::aliases::normalize_host;
use crate::supervisor::logs::Redactor;
use crate::supervisor::LiveDeployment;

/// Characters of a session id the page sees.
const SESSION_PREFIX: usize = 8;
/// Sessions listed at most.
const MAX_SESSIONS: usize = 200;

fn answer<T: Serialize>(result: Result<T, DaemonError>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => refusal(status_of(&error), error.to_string()),
    }
}

#[derive(Deserialize)]
pub struct RouteParams {
    host: String,
    method: String,
    path: String,
}

/// What `stack route` says: the rule that serves `method path` on the alias `host`, and where
/// it goes.
pub async fn explain_route(
    State(dashboard): State<Dashboard>,
    QueryParams(params): QueryParams<RouteParams>,
) -> Response {
    let Some(live) = dashboard.daemon.live_parts() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "stack up is still starting",
        );
    };
    let Ok(host) = normalize_host(&params.host) else {
        return refusal(StatusCode::BAD_REQUEST, "not a host name");
    };
    let Ok(method) = Method::from_bytes(params.method.as_bytes()) else {
        return refusal(StatusCode::BAD_REQUEST, "not an HTTP method");
    };
    let Some(alias) = live.aliases.all().remove(&host) else {
        return refusal(StatusCode::NOT_FOUND, format!("`{host}` is not an alias"));
    };
    let Ok(rules) = alias.rule_set() else {
        return refusal(
            StatusCode::CONFLICT,
            "the alias's stored rules no longer load",
        );
    };
    let path = params.path.split(['?', '#']).next().unwrap_or_default();
    let normalized = match normalize_path(path) {
        Ok(normalized) => normalized.into_owned(),
        Err(reason) => {
            return Json(serde_json::json!({
                "path": path, "status": 400, "reason": reason.to_string(),
            }))
            .into_response()
        }
    };
    let explained = match rules.route(&method, &normalized) {
        Some(index) => {
            let rule = &rules.rules()[index];
            serde_json::json!({
                "path": normalized,
                "rule": index + 1,
                "pathname": rule.pathname_display(),
                "method": rule.methods_display(),
                "dest": rule.dest.to_string(),
                "describe": rule.dest.describe(),
            })
        }
        None => serde_json::json!({ "path": normalized, "rule": null, "status": 404 }),
    };
    Json(explained).into_response()
}

/// One logged request with its (masked) headers, for a click in the listing.
pub async fn request(
    State(dashboard): State<Dashboard>,
    seq: Result<axum::extract::Path<u64>, axum::extract::rejection::PathRejection>,
) -> Response {
    let Ok(axum::extract::Path(seq)) = seq else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "a request is named by its number: `/api/requests/<number>`",
        );
    };
    match dashboard.daemon.request(seq).await {
        Ok(answer) if !answer.enabled => refusal(
            StatusCode::NOT_FOUND,
            "the request log is off (`STACK_REQUEST_LOG=off`): no request is kept",
        ),
        Ok(answer) => match answer.requests.into_iter().next() {
            Some(record) => Json(record).into_response(),
            None => refusal(StatusCode::NOT_FOUND, "that request is no longer kept"),
        },
        Err(error) => refusal(status_of(&error), error.to_string()),
    }
}

#[derive(Serialize)]
struct SessionView {
    /// The first 8 characters of the id.
    id: String,
    ttl: Option<i64>,
    /// The stored value, decoded.
    data: Value,
}

async fn redis_url(dashboard: &Dashboard) -> Result<RedisUrl, Response> {
    let url = dashboard
        .daemon
        .redis()
        .await
        .map_err(|error| refusal(status_of(&error), error.to_string()))?
        .url;
    RedisUrl::parse(&url)
        .map_err(|_| refusal(StatusCode::SERVICE_UNAVAILABLE, "the Redis URL is unusable"))
}

async fn inspector(url: &RedisUrl) -> Result<Inspector, Response> {
    Inspector::connect(url)
        .await
        .map_err(|error| refusal(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
}

/// Runs `work` on a thread of its own with a current-thread runtime: the inspector's scans
/// run interleaved on one task (not `Send`), as `stack redis` runs them.
async fn on_own_thread<F, Fut>(work: F) -> Response
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response>,
{
    let joined = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(work()),
            Err(error) => refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
        }
    })
    .await;
    joined.unwrap_or_else(|_| refusal(StatusCode::INTERNAL_SERVER_ERROR, "the session read failed"))
}

/// The sessions in the store (as `stack redis keys` and `get` show them), ids cut short.
pub async fn sessions(State(dashboard): State<Dashboard>) -> Response {
    let url = match redis_url(&dashboard).await {
        Ok(url) => url,
        Err(refused) => return refused,
    };
    on_own_thread(move || list_sessions(url)).await
}

async fn list_sessions(url: RedisUrl) -> Response {
    let mut inspector = match inspector(&url).await {
        Ok(inspector) => inspector,
        Err(refused) => return refused,
    };
    let mut entries: Vec<Entry> = Vec::new();
    let scanned = inspector
        .scan("*", |batch| {
            let room = MAX_SESSIONS.saturating_sub(entries.len());
            entries.extend(batch.into_iter().take(room));
        })
        .await;
    if let Err(error) = scanned {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    }
    let views: Vec<SessionView> = entries
        .iter()
        .map(|entry| SessionView {
            id: entry.id.chars().take(SESSION_PREFIX).collect(),
            ttl: entry.ttl.seconds(),
            data: entry
                .parse()
                .map_or_else(|problem| Value::String(problem.into()), Value::Object),
        })
        .collect();
    Json(views).into_response()
}

/// The environment the services got, secrets as `***`.
pub async fn environment(State(dashboard): State<Dashboard>) -> Response {
    let Some(live) = dashboard.daemon.live_parts() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "stack up is still starting",
        );
    };
    // The environment now (after a `.env` save, the new one), each service's own on top.
    let snapshot = live.supervisor.snapshot();
    let current: Vec<&LiveDeployment> = snapshot
        .deployments
        .iter()
        .filter(|running| running.current)
        .collect();
    let mut secrets = crate::env::secret_values(&snapshot.env);
    for running in &current {
        secrets.extend(crate::env::secret_values(&snapshot.environment(running)));
    }
    let fresh = Redactor::new(secrets.clone());
    let show = |env: &BTreeMap<String, String>| -> Vec<(String, String)> {
        env.iter()
            .map(|(key, value)| {
                let value = if secrets.contains(value) {
                    "***".to_owned()
                } else {
                    live.redactor.redact(&fresh.redact(value))
                };
                (key.clone(), value)
            })
            .collect()
    };
    let services: Vec<String> = current
        .iter()
        .map(|running| running.spec.service.clone())
        .collect();
    let own: BTreeMap<&str, Vec<(String, String)>> = current
        .iter()
        .filter(|running| !running.spec.settings.env.is_empty())
        .map(|running| {
            (
                running.spec.service.as_str(),
                show(&running.spec.settings.env),
            )
        })
        .collect();
    Json(serde_json::json!({
        "services": services,
        "env": show(&snapshot.env),
        "service_env": own,
        "note": "every service gets this environment, its own `env` (stack.toml) over it, and PORT set per instance",
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct ScaleBody {
    service: String,
    instances: usize,
}

pub async fn scale(
    State(dashboard): State<Dashboard>,
    ActionBody(body): ActionBody<ScaleBody>,
) -> Response {
    answer(
        dashboard
            .daemon
            .scale(ScaleRequest {
                target: body.service,
                instances: body.instances,
            })
            .await,
    )
}

pub async fn rollback(
    State(dashboard): State<Dashboard>,
    ActionBody(body): ActionBody<RollbackRequest>,
) -> Response {
    answer(dashboard.daemon.rollback(body).await)
}

#[derive(Deserialize)]
pub struct RemoveBody {
    deployment: String,
}

pub async fn remove(
    State(dashboard): State<Dashboard>,
    ActionBody(body): ActionBody<RemoveBody>,
) -> Response {
    answer(dashboard.daemon.remove(&body.deployment).await)
}

#[derive(Deserialize)]
pub struct RestartBody {
    /// A service (its live deployment) or a deployment id.
    deployment: String,
    /// The instance number `stack ls` shows; every instance, one at a time, when absent.
    #[serde(default)]
    instance: Option<usize>,
}

pub async fn restart(
    State(dashboard): State<Dashboard>,
    ActionBody(body): ActionBody<RestartBody>,
) -> Response {
    let request = RestartRequest {
        target: body.deployment,
        instance: body.instance,
    };
    answer(dashboard.daemon.restart(request).await)
}

#[derive(Deserialize)]
pub struct DeleteSessionBody {
    /// The 8 characters the page shows.
    session: String,
}

pub async fn delete_session(
    State(dashboard): State<Dashboard>,
    ActionBody(body): ActionBody<DeleteSessionBody>,
) -> Response {
    let prefix = body.session;
    let well_formed = prefix.len() == SESSION_PREFIX
        && prefix
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !well_formed {
        return refusal(
            StatusCode::BAD_REQUEST,
            "`session` is the 8 characters the dashboard shows",
        );
    }
    let url = match redis_url(&dashboard).await {
        Ok(url) => url,
        Err(refused) => return refused,
    };
    on_own_thread(move || delete_by_prefix(url, prefix)).await
}

async fn delete_by_prefix(url: RedisUrl, prefix: String) -> Response {
    let mut inspector = match inspector(&url).await {
        Ok(inspector) => inspector,
        Err(refused) => return refused,
    };
    let mut ids: Vec<String> = Vec::new();
    // The prefix is letters, digits, `-` and `_` only: no glob character reaches SCAN.
    let scanned = inspector
        .scan(&format!("{prefix}*"), |batch| {
            ids.extend(batch.into_iter().map(|entry| entry.id));
        })
        .await;
    if let Err(error) = scanned {
        return refusal(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    }
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [] => refusal(StatusCode::NOT_FOUND, format!("no session `{prefix}…`")),
        [id] => match inspector.delete(std::slice::from_ref(id)).await {
            Ok(_) => Json(serde_json::json!({ "deleted": prefix })).into_response(),
            Err(error) => refusal(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        },
        _ => refusal(
            StatusCode::CONFLICT,
            format!("several sessions start with `{prefix}`: use `stack redis del`"),
        ),
    }
}
