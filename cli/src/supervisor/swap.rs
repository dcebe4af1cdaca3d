//! Hot swaps: start a deployment beside the live one of its service without routing to it
//! (*stage*), wait until every instance is ready, then make it the service's current
//! deployment and retire the others in one supervisor step (*promote*): the next snapshot, and
//! so the next routing table, sends `<service>.localhost` and every alias rule whose `dest` is
//! the service to the new instances, while the old ones drain their in-flight requests (the
//! proxy's counters, see [`instance`](super::instance)) and stop. Also swaps the environment
//! new instances get (a dotenv change). Never builds and never writes state.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::logs::Redactor;
use super::{
    Config, DeploymentSpec, DeploymentState, Order, Supervisor, SupervisorError, SupervisorTask,
};
use crate::env;

impl Supervisor {
    /// Starts a deployment that takes no traffic under its service's name yet (its own
    /// `<id>.localhost` works once it is ready).
    pub async fn stage(
        &self,
        spec: DeploymentSpec,
        instances: usize,
    ) -> Result<(), SupervisorError> {
        self.ask(|reply| Order::Stage {
            spec,
            instances,
            reply,
        })
        .await
    }

    /// Makes a running deployment its service's current one and retires every other
    /// deployment of that service (drained, then stopped). Answers with the retired ids.
    pub async fn promote(&self, deployment_id: &str) -> Result<Vec<String>, SupervisorError> {
        self.ask(|reply| Order::Promote {
            deployment_id: deployment_id.to_string(),
            reply,
        })
        .await?
    }

    /// The environment for instances started from now on (running ones keep theirs).
    pub async fn set_env(&self, env: BTreeMap<String, String>) -> Result<(), SupervisorError> {
        self.ask(|reply| Order::SetEnv { env, reply }).await
    }

    /// Stage, wait until every instance is ready, promote. A deployment that fails to start
    /// is removed again and the live one keeps serving. Answers with the retired ids.
    ///
    /// A live deployment whose program listens on a port of its own (it ignores `PORT`) holds
    /// the port the new one needs: it is stopped first (a gap, said in its log), and started
    /// again when the new one fails.
    pub async fn swap_in(
        &self,
        spec: DeploymentSpec,
        instances: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, SupervisorError> {
        let deployment_id = spec.id.clone();
        let holding = self
            .snapshot()
            .deployments
            .iter()
            .find(|live| live.current && live.spec.service == spec.service && live.wanted > 0)
            .and_then(|live| Some((live.clone(), live.fixed_port?)));
        if let Some((live, port)) = &holding {
            self.stop_holder(live, *port).await?;
        }
        self.stage(spec, instances).await?;
        if let Err(error) = self.wait_started(&deployment_id, timeout).await {
            let _ = self.remove(&deployment_id).await;
            if let Some((live, _)) = &holding {
                live.log.push(
                    &live.spec.service,
                    "[stack] the new deployment did not start: this one starts again",
                );
                let _ = self.scale(&live.spec.id, live.wanted).await;
            }
            return Err(error);
        }
        self.promote(&deployment_id).await
    }

    /// Stops `live`, which holds `port`, and waits (its stop timeout and grace, at most) until
    /// the port is free for its successor.
    async fn stop_holder(
        &self,
        live: &super::LiveDeployment,
        port: u16,
    ) -> Result<(), SupervisorError> {
        live.log.push(
            &live.spec.service,
            &format!("[stack] it listens on port {port} of its own, which the new deployment needs: stopping it first (its requests get 503 until the new one is ready)"),
        );
        self.scale(&live.spec.id, 0).await?;
        let deadline = tokio::time::Instant::now()
            + live.spec.settings.stop_timeout
            + super::DEFAULT_GRACE
            + Duration::from_secs(2);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Like [`Supervisor::wait_ready`], but gives up on an instance that failed to start twice
    /// in a row: a new deployment that crashes is not worth waiting through long backoffs for.
    async fn wait_started(
        &self,
        deployment_id: &str,
        timeout: Duration,
    ) -> Result<(), SupervisorError> {
        let mut receiver = self.subscribe();
        let started = tokio::time::Instant::now();
        let mut deadline;
        let mut limit: Option<(Duration, String)> = None;
        loop {
            {
                let snapshot = receiver.borrow_and_update().clone();
                let Some(deployment) = snapshot
                    .deployments
                    .iter()
                    .find(|deployment| deployment.spec.id == deployment_id)
                else {
                    return Err(SupervisorError::Stopped);
                };
                let (applies, _) = limit.get_or_insert_with(|| {
                    super::readiness_limit(timeout, &deployment.spec.settings)
                });
                deadline = started + *applies + super::WAIT_SLACK;
                let active: Vec<_> = deployment.active().collect();
                // A one-shot that already did its work (exited 0) started well.
                if active.len() == deployment.wanted
                    && active.iter().all(|instance| {
                        instance.takes_traffic() || instance.completed.load(Ordering::Acquire)
                    })
                {
                    return Ok(());
                }
                // One failed start can be bad luck (a port taken between pick and bind); an
                // instance that failed twice in a row, or a CRASHED deployment, will not come up.
                let failed_twice = active.iter().any(|instance| {
                    instance.restarts.load(Ordering::Acquire) >= 2
                        && instance
                            .last_error
                            .lock()
                            .expect("never poisoned: no panics while held")
                            .is_some()
                });
                if failed_twice || deployment.state() == DeploymentState::Crashed {
                    return Err(SupervisorError::Crashed {
                        deployment: deployment_id.to_string(),
                        reason: deployment.last_error().unwrap_or_default(),
                    });
                }
                if tokio::time::Instant::now() >= deadline {
                    let (applies, which) = limit.clone().expect("set above");
                    return Err(SupervisorError::NotReady {
                        deployment: deployment_id.to_string(),
                        seconds: applies.as_secs(),
                        limit: which,
                        reason: deployment
                            .last_error()
                            .unwrap_or_else(|| "still starting".into()),
                    });
                }
            }
            if let Ok(Err(_)) = tokio::time::timeout_at(deadline, receiver.changed()).await {
                return Err(SupervisorError::Stopped);
            }
        }
    }
}

impl SupervisorTask {
    /// [`SupervisorTask::deploy`] without taking the service's name from the live one.
    pub(super) fn stage(&mut self, spec: DeploymentSpec, instances: usize) {
        let service = spec.service.clone();
        let live: Option<String> = self
            .deployments
            .iter()
            .find(|running| running.current && running.spec.service == service)
            .map(|running| running.spec.id.clone());
        let deployment_id = spec.id.clone();
        self.deploy(spec, instances);
        for running in &mut self.deployments {
            if running.spec.service == service {
                running.current = Some(&running.spec.id) == live.as_ref();
            }
        }
        tracing::info!(deployment = deployment_id, instances, "staged");
    }

    pub(super) fn promote(&mut self, deployment_id: &str) -> Result<Vec<String>, SupervisorError> {
        let service = self
            .deployments
            .iter()
            .find(|running| running.spec.id == deployment_id)
            .map(|running| running.spec.service.clone())
            .ok_or_else(|| SupervisorError::UnknownTarget {
                target: deployment_id.to_string(),
                running: self.snapshot.borrow().names(),
            })?;
        let retired: Vec<String> = self
            .deployments
            .iter()
            .filter(|running| running.spec.service == service && running.spec.id != deployment_id)
            .map(|running| running.spec.id.clone())
            .collect();
        for running in &mut self.deployments {
            if running.spec.service == service {
                running.current = running.spec.id == deployment_id;
            }
        }
        for old in &retired {
            // Drains in its instance tasks: they leave the table with the next snapshot.
            self.remove(old)?;
        }
        tracing::info!(deployment = deployment_id, ?retired, "promoted");
        Ok(retired)
    }

    pub(super) fn set_env(&mut self, env: BTreeMap<String, String>) {
        let old = &self.config;
        let mut secrets = env::secret_values(&env);
        secrets.extend(env::secret_values(&old.env));
        self.config = Arc::new(Config {
            pids_dir: old.pids_dir.clone(),
            logs_dir: old.logs_dir.clone(),
            redactor: Redactor::new(secrets),
            env,
            log_rotation: old.log_rotation,
            grace: old.grace,
            ready_timeout: old.ready_timeout,
            echo_logs: old.echo_logs,
            shutdown: old.shutdown.clone(),
        });
    }
}
