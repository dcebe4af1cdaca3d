//! What ends a `stack up`: Ctrl-C, SIGTERM, SIGHUP (its terminal closed), or `stack down`
//! through the control socket. The
//! signal handlers are installed before anything starts, so a Ctrl-C during the first build
//! still stops everything cleanly.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::output::{CliError, CliResult};

/// Why a `stack up` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Interrupt,
    Terminate,
    /// The terminal went away: stopped in order, as for SIGTERM.
    Hangup,
    Down,
    /// A dependency failed the start (it never became healthy, a one-shot exited non-zero).
    StartFailed,
}

impl StopReason {
    /// The exit code shells expect: 128 + the signal, or 0 after `stack down`.
    pub fn exit_code(self) -> u8 {
        match self {
            StopReason::Interrupt => 130,
            StopReason::Terminate => 143,
            StopReason::Hangup => 129,
            StopReason::Down => 0,
            StopReason::StartFailed => 1,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, watched from [`Signals::listen`] on.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    pub fn listen() -> CliResult<Signals> {
        let watch = |kind, name: &str| {
            signal(kind).map_err(|error| CliError::new(format!("cannot watch for {name}: {error}")))
        };
        Ok(Signals {
            interrupt: watch(SignalKind::interrupt(), "Ctrl-C")?,
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
            hangup: watch(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for a signal, or for `down` (cancelled by `stack down`).
    pub async fn stop_requested(&mut self, down: &CancellationToken) -> StopReason {
        tokio::select! {
            _ = self.interrupt.recv() => StopReason::Interrupt,
            _ = self.terminate.recv() => StopReason::Terminate,
            _ = self.hangup.recv() => StopReason::Hangup,
            () = down.cancelled() => StopReason::Down,
        }
    }
}
