//! The dashboard's live feeds, as server-sent events.
//!
//! `GET /api/events`: one stream for the whole page, batched: every [`TICK`] one `requests`
//! event with the requests logged since the last one (none when there were none; at most the
//! last 1,000, all the page keeps; without headers, which the page asks for on a click), and, when
//! it changed, one `overview` event (deployments and instances, aliases with their rules and
//! hit counts). No widget polls; a quiet stack sends nothing but keep-alives.
//! `GET /api/logs?target=T`: a service's (or deployment's) stored lines, then its live ones,
//! batched the same way. Both end when `stack up` stops.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{refusal, Dashboard, QueryParams};
use crate::control::api::{DeploymentStatus, LogsQuery};
use crate::proxy::requests;
use crate::supervisor::logs::LogLine;

/// How often the page gets a batch.
const TICK: Duration = Duration::from_millis(250);
/// The overview is compared (and sent when changed) every this many ticks.
const OVERVIEW_EVERY: u32 = 4;
/// Stored log lines sent first.
const LOG_LINES: usize = 500;

/// What the page draws its services and aliases from.
#[derive(Serialize, PartialEq)]
pub struct Overview {
    pub deployments: Vec<DeploymentStatus>,
    pub aliases: Vec<AliasView>,
    /// False when `stack up` runs with `STACK_REQUEST_LOG=off`.
    pub request_log: bool,
    pub port: u16,
}

#[derive(Serialize, PartialEq)]
pub struct AliasView {
    pub host: String,
    pub source: String,
    pub rules: Vec<RuleView>,
}

#[derive(Serialize, PartialEq)]
pub struct RuleView {
    pub pathname: String,
    pub method: String,
    pub dest: String,
    pub hits: u64,
}

impl Dashboard {
    pub(super) async fn overview(&self) -> Overview {
        let deployments = self.daemon.deployments().await;
        let (aliases, request_log) = match self.daemon.live_parts() {
            Some(live) => {
                let aliases = live
                    .aliases
                    .all()
                    .into_iter()
                    .map(|(host, alias)| {
                        let hits = live
                            .requests
                            .as_ref()
                            .map(|log| log.hits(&host))
                            .unwrap_or_default();
                        let rules = alias.rule_set().map_or_else(
                            |_| Vec::new(),
                            |rules| {
                                rules
                                    .rules()
                                    .iter()
                                    .enumerate()
                                    .map(|(index, rule)| RuleView {
                                        pathname: rule.pathname_display().to_owned(),
                                        method: rule.methods_display(),
                                        dest: rule.dest.to_string(),
                                        hits: hits.get(index).copied().unwrap_or(0),
                                    })
                                    .collect()
                            },
                        );
                        AliasView {
                            source: alias.source(),
                            host,
                            rules,
                        }
                    })
                    .collect();
                (aliases, live.requests.is_some())
            }
            None => (Vec::new(), false),
        };
        Overview {
            deployments,
            aliases,
            request_log,
            port: self.port,
        }
    }
}

struct Feed {
    dashboard: Dashboard,
    since: u64,
    ticks: u32,
    last_overview: Option<String>,
    /// Events ready to go out.
    queue: Vec<Event>,
    ticker: tokio::time::Interval,
}

pub async fn stream(State(dashboard): State<Dashboard>) -> Response {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let feed = Feed {
        dashboard: dashboard.clone(),
        since: 0,
        ticks: 0,
        last_overview: None,
        queue: Vec::new(),
        ticker,
    };
    let events = stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(event) = feed.queue.pop() {
                return Some((Ok::<_, Infallible>(event), feed));
            }
            tokio::select! {
                _ = feed.ticker.tick() => {}
                () = feed.dashboard.stopping.cancelled() => return None,
            }
            feed.next_batch().await;
            // Popped from the end: the overview goes out before the requests that use it.
            feed.queue.reverse();
        }
    });
    sse(events, &dashboard)
}

impl Feed {
    async fn next_batch(&mut self) {
        if self.ticks % OVERVIEW_EVERY == 0 {
            let overview = self.dashboard.overview().await;
            let json = serde_json::to_string(&overview).expect("plain data serialises");
            if self.last_overview.as_deref() != Some(json.as_str()) {
                self.queue
                    .push(Event::default().event("overview").data(json.clone()));
                self.last_overview = Some(json);
            }
        }
        self.ticks = self.ticks.wrapping_add(1);
        // The page keeps the last 1,000: a batch never carries more, whatever the rate.
        let answer = self
            .dashboard
            .daemon
            .requests_brief(self.since, requests::CAPACITY)
            .await;
        if let Ok(answer) = answer {
            self.since = answer.last_seq;
            if !answer.requests.is_empty() {
                let json = serde_json::to_string(&answer.requests).expect("plain data serialises");
                self.queue
                    .push(Event::default().event("requests").data(json));
            }
        }
    }
}

fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    _dashboard: &Dashboard,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub struct LogsParams {
    target: String,
}

/// Lines of one service or deployment: the last [`LOG_LINES`] stored, then the live ones, in
/// `lines` events (each a JSON array).
pub async fn logs(
    State(dashboard): State<Dashboard>,
    QueryParams(params): QueryParams<LogsParams>,
) -> Response {
    let query = LogsQuery {
        target: params.target,
        lines: LOG_LINES,
        since_ms: 0,
        follow: true,
    };
    let feed = match dashboard.daemon.logs(&query).await {
        Ok(feed) => feed,
        Err(error) => return refusal(StatusCode::NOT_FOUND, error.to_string()),
    };
    let first = lines_event(&feed.stored);
    let filter = feed.filter;
    let state = (feed.live, dashboard.stopping.clone());
    let live = stream::unfold(state, move |(receiver, stopping)| async move {
        let mut receiver = receiver?;
        let mut batch: Vec<LogLine> = Vec::new();
        loop {
            let next = if batch.is_empty() {
                tokio::select! {
                    next = receiver.recv() => next,
                    () = stopping.cancelled() => return None,
                }
            } else {
                // Whatever else arrives within a tick goes in the same event.
                match tokio::time::timeout(TICK, receiver.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        let event = lines_event(&batch);
                        return Some((Ok(event), (Some(receiver), stopping)));
                    }
                }
            };
            match next {
                Ok(line) if !filter.keeps(&line) => {}
                Ok(line) => batch.push(line),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) if batch.is_empty() => return None,
                Err(RecvError::Closed) => {
                    return Some((Ok(lines_event(&batch)), (None, stopping)));
                }
            }
        }
    });
    let events = stream::once(async move { Ok(first) });
    sse(futures_util::StreamExt::chain(events, live), &dashboard)
}

fn lines_event(lines: &[LogLine]) -> Event {
    Event::default()
        .event("lines")
        .data(serde_json::to_string(lines).expect("log lines serialise"))
}
