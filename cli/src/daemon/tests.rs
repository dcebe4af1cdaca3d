//! The daemon's phases through its real control socket and client: what a starting daemon
//! answers, records and refuses (no timed slow build needed), and what a running one refuses
//! without changing anything.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::control::api::{LogsQuery, RollbackRequest, ScaleRequest};
use crate::control::{self, Client, ControlError};
use crate::proxy::{Routing, RoutingTable};
use crate::state::aliases::AliasTarget;
use crate::state::Alias;
use crate::supervisor::build::{Service, ServiceKind};
use crate::supervisor::logs::Redactor;

fn service(name: &str) -> Service {
    Service {
        name: name.into(),
        dir: name.into(),
        kind: ServiceKind::Npm,
        settings: Default::default(),
        instances: None,
        depends_on: Default::default(),
        watch: Vec::new(),
        ignore: Vec::new(),
        env_file: None,
        build_at: None,
        run_at: None,
    }
}

fn plain(target: &str) -> Alias {
    Alias::new(AliasTarget::Plain {
        target: target.into(),
    })
}

/// A daemon on a real socket in a temp project, and a client for it.
struct Served {
    dir: tempfile::TempDir,
    daemon: Daemon,
    client: Client,
    shutdown: CancellationToken,
    _building: builds::BuildsGuard,
}

impl Served {
    fn starting(building: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".stack")).unwrap();
        let builds = Builds::default();
        let services: Vec<Service> = building.iter().map(|name| service(name)).collect();
        let guard = builds.start(&services);
        let daemon = Daemon::starting(dir.path(), builds);
        let listener = control::server::bind(&control::socket_path(dir.path())).unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(control::server::serve(
            listener,
            daemon.clone(),
            shutdown.clone(),
        ));
        Served {
            client: Client::new(dir.path()),
            dir,
            daemon,
            shutdown,
            _building: guard,
        }
    }

    /// Hands the daemon a supervisor that runs nothing, as the start does.
    fn run(&self) -> Supervisor {
        let (supervisor, _task) = Supervisor::start(crate::supervisor::Config {
            pids_dir: self.dir.path().join(".stack/pids"),
            logs_dir: self.dir.path().join(".stack/logs"),
            env: Default::default(),
            redactor: Redactor::default(),
            log_rotation: Default::default(),
            grace: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(1),
            echo_logs: false,
            shutdown: self.shutdown.child_token(),
        });
        let state = self.daemon.read_state_for_start().unwrap();
        self.daemon.run(Arc::new(Live {
            supervisor: supervisor.clone(),
            aliases: Arc::new(Aliases::new(
                state.aliases,
                Routing::new(RoutingTable::new()),
                Default::default(),
            )),
            proxy_port: 3000,
            https_port: None,
            redis_url: "redis://127.0.0.1:6390".into(),
            redis: None,
            ready_timeout: Duration::from_secs(1),
            max_instances: 64,
            requests: None,
            session_secrets: None,
            redactor: Redactor::default(),
            session_cache: Default::default(),
            waiting: Default::default(),
        }));
        supervisor
    }

    fn state(&self) -> State {
        State::load(self.dir.path()).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn is_starting<T: std::fmt::Debug>(answer: Result<T, ControlError>) -> bool {
    matches!(answer, Err(ControlError::Starting { .. }))
}

#[tokio::test]
async fn a_starting_daemon_lists_its_builds_and_records_aliases_and_scale_for_the_start() {
    let served = Served::starting(&["reader", "writer"]);
    let client = &served.client;
    let building = client.deployments().await.unwrap();
    let names: Vec<(&str, usize)> = building
        .iter()
        .map(|status| (status.service.as_str(), status.wanted))
        .collect();
    assert_eq!(names, [("reader", 1), ("writer", 1)]);
    assert!(building
        .iter()
        .all(|status| status.state == crate::supervisor::DeploymentState::Building));

    let scaled = client
        .scale(ScaleRequest {
            target: "reader.localhost".into(),
            instances: 3,
        })
        .await
        .unwrap();
    assert!(scaled.at_start);
    assert_eq!((scaled.deployment.as_str(), scaled.wanted), ("reader", 3));
    assert_eq!(client.deployments().await.unwrap()[0].wanted, 3);
    let aliased = client
        .change_alias(AliasChange::Set {
            host: "hi.localhost".into(),
            alias: plain("reader"),
        })
        .await
        .unwrap();
    assert_eq!(aliased.applied, Applied::AtStart);
    let state = served.state();
    assert_eq!(state.scale_of("reader"), 3);
    assert!(state.aliases.contains_key("hi.localhost"));

    // Only a service being built can be scaled, and nothing else is answered yet.
    let not_built = client.scale(ScaleRequest {
        target: "writer-abcdefghij".into(),
        instances: 2,
    });
    assert!(is_starting(not_built.await));
    assert!(is_starting(client.redis().await));
    assert!(is_starting(client.remove("reader-abcdefghij").await));
    let rollback = client.rollback(RollbackRequest {
        service: "reader".into(),
        deployment: None,
    });
    assert!(is_starting(rollback.await));
    let logs = client.logs(LogsQuery {
        target: "reader".into(),
        lines: 10,
        since_ms: 0,
        follow: false,
    });
    assert!(is_starting(logs.await.map(|_| ())));
    match client.redis().await {
        Err(ControlError::Starting { message, hint }) => {
            assert!(message.contains("building reader, writer"), "{message}");
            assert!(hint.unwrap().contains("`stack down`"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn once_the_start_has_read_the_state_changes_wait_for_it_and_nothing_is_lost() {
    let served = Served::starting(&["reader"]);
    served.daemon.read_state_for_start().unwrap();
    let client = &served.client;
    let aliased = client.change_alias(AliasChange::Set {
        host: "late.localhost".into(),
        alias: plain("reader"),
    });
    assert!(is_starting(aliased.await));
    let scaled = client.scale(ScaleRequest {
        target: "reader".into(),
        instances: 2,
    });
    assert!(is_starting(scaled.await));
    let state = served.state();
    assert!(state.aliases.is_empty() && state.scale.is_empty());
}

#[tokio::test]
async fn down_is_answered_in_both_phases() {
    let served = Served::starting(&["reader"]);
    assert!(served.client.down().await.unwrap().stopping);
    assert!(served.daemon.down_requested().is_cancelled());
}

#[tokio::test]
async fn a_running_daemon_refuses_bad_input_and_changes_nothing() {
    let served = Served::starting(&[]);
    served.run();
    let client = &served.client;
    assert_eq!(client.redis().await.unwrap().url, "redis://127.0.0.1:6390");
    // User input goes into paths encoded, and comes back out as it was typed.
    for target in ["a b", "%", "../x", "a/b?c#d"] {
        let logs = client.logs(LogsQuery {
            target: target.into(),
            lines: 10,
            since_ms: 0,
            follow: false,
        });
        match logs.await.map(|_| ()) {
            Err(ControlError::Refused {
                status: 404,
                message,
                ..
            }) => assert_eq!(
                message,
                format!("no service or deployment named `{target}`")
            ),
            other => panic!("{target}: {other:?}"),
        }
        match client.remove(target).await {
            Err(ControlError::Refused {
                status: 404,
                message,
                ..
            }) => assert_eq!(message, format!("no deployment `{target}`")),
            other => panic!("{target}: {other:?}"),
        }
    }
    // A dest that names nothing is refused whole.
    let refused = client.change_alias(AliasChange::Set {
        host: "bad.localhost".into(),
        alias: plain("nothing-here"),
    });
    match refused.await {
        Err(ControlError::Refused {
            status: 422,
            message,
            hint,
        }) => {
            assert!(
                message.contains("rule 1") && message.contains("nothing-here"),
                "{message}"
            );
            assert!(hint.unwrap().contains("Nothing was changed"));
        }
        other => panic!("{other:?}"),
    }
    assert!(served.state().aliases.is_empty());
    assert!(
        !State::path(served.dir.path()).exists(),
        "nothing was written"
    );
}
