//! The ordered stop of a started `stack up` (Ctrl-C, SIGTERM, `stack down`): no new builds,
//! then the instances (the services of the stop order one after another, dependents before
//! what they depend on, each within its stop timeout; the rest in parallel), then the routing
//! follower, the proxy (requests in flight finish), the control socket, and Redis last, so no
//! service ever loses its session store while it still answers. Each wait is bounded by a named
//! timeout; the guards (socket file, process watchdog, lock) are released at the very end.

use std::time::{Duration, Instant};

use super::start::Launched;
use crate::output;
use crate::supervisor;

/// A redeploy in progress is abandoned (its build killed) within this.
const REDEPLOY_TIMEOUT: Duration = Duration::from_secs(2);
/// The routing follower ends at once once cancelled; this bounds a wedged one.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(2);
/// The proxy lets requests in flight finish for up to 10 s (its own grace), then cuts them.
const PROXY_TIMEOUT: Duration = Duration::from_secs(12);
/// Open control requests (a `stack logs -f`) end at shutdown; this bounds the rest.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(3);
/// Redis writes its append-only file and exits on SIGTERM; SIGKILL after this.
const REDIS_GRACE: Duration = supervisor::DEFAULT_GRACE;

impl Launched {
    /// Stops everything in order and says how long it took.
    pub async fn shutdown(self) {
        output::info("Stopping...");
        let stopping = Instant::now();
        self.root.cancel();
        if let Some(redeploy_task) = self.watching {
            // It ends, and drops its watcher, once cancelled.
            let _ = tokio::time::timeout(REDEPLOY_TIMEOUT, redeploy_task).await;
        }
        let stop_order = self.stop_order.lock().expect("never poisoned").clone();
        self.supervisor.stop_in_order(stop_order).await;
        let _ = self.supervisor_task.await;
        let _ = tokio::time::timeout(ROUTES_TIMEOUT, self.routes_task).await;
        let _ = tokio::time::timeout(PROXY_TIMEOUT, self.proxy_task).await;
        let _ = tokio::time::timeout(CONTROL_TIMEOUT, self.control_task).await;
        if let Some(redis) = self.redis {
            redis.stop(REDIS_GRACE).await;
        }
        output::info(format!(
            "Stopped everything [{:.1}s]",
            stopping.elapsed().as_secs_f64()
        ));
    }
}
