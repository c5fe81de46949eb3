//! Unix signals the programs react to: stop on SIGINT/SIGTERM, and (in sidecar mode)
//! forward them to the command.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::fatal::Fatal;

/// The signals that stop a program: SIGINT (ctrl-c) and SIGTERM (kill, systemd, Docker,
/// Kubernetes).
pub const STOP: &[Signal] = &[Signal::SIGINT, Signal::SIGTERM];

/// The signals a sidecar forwards to its command: the stop signals, and those servers use
/// for reloads and dumps.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Installed handlers for a set of signals. Install them first thing, so that a signal
/// sent right after start-up is seen rather than killing the process.
#[derive(Debug)]
pub struct Signals {
    /// One tokio stream per signal.
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Installs handlers for `which`.
    pub fn install(which: &[Signal]) -> Result<Self, Fatal> {
        let streams = which
            .iter()
            .map(|&sig| {
                signal(SignalKind::from_raw(sig as i32))
                    .map(|stream| (sig, stream))
                    .map_err(|e| Fatal::failure(format!("cannot handle {sig}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Signals { streams })
    }

    /// Waits for the next of the signals.
    pub async fn recv(&mut self) -> Signal {
        let waits = self.streams.iter_mut().map(|(sig, stream)| {
            let sig = *sig;
            Box::pin(async move {
                stream.recv().await;
                sig
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Whether `sig` asks the program to stop.
pub fn is_stop(sig: Signal) -> bool {
    STOP.contains(&sig)
}
