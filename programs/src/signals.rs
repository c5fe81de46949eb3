//! Unix signals the programs react to: stop on SIGINT/SIGTERM, and (in sidecar mode)
//! forward them to the command.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

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

/// Where a program's signals come from: the process's handlers (what `main` installs), or
/// a channel (a program run in-process, by a test or an embedding program). A program's
/// `run` takes one, mini-redis style (`run(args, shutdown)`), so how it stops is decided by
/// its caller.
///
/// Install the handlers first thing, so that a signal sent right after start-up is seen
/// rather than killing the process.
#[derive(Debug)]
pub struct Signals {
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// One tokio stream per signal.
    Process(Vec<(Signal, tokio::signal::unix::Signal)>),
    /// Signals sent by the caller; a closed channel never delivers again.
    Channel(mpsc::UnboundedReceiver<Signal>),
}

impl Signals {
    /// Installs handlers for `which` (needs a tokio runtime).
    pub fn install(which: &[Signal]) -> Result<Self, Fatal> {
        let streams = which
            .iter()
            .map(|&sig| {
                signal(SignalKind::from_raw(sig as i32))
                    .map(|stream| (sig, stream))
                    .map_err(|e| Fatal::failure(format!("cannot handle {sig}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Signals {
            source: Source::Process(streams),
        })
    }

    /// Signals the caller sends: send `SIGTERM` to stop the program.
    ///
    /// ```
    /// use muster_programs::signals::Signals;
    /// use nix::sys::signal::Signal;
    ///
    /// let (stop, signals) = Signals::channel();
    /// stop.send(Signal::SIGTERM).unwrap();
    /// # drop(signals);
    /// ```
    pub fn channel() -> (mpsc::UnboundedSender<Signal>, Self) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            sender,
            Signals {
                source: Source::Channel(receiver),
            },
        )
    }

    /// Waits for the next of the signals.
    pub async fn recv(&mut self) -> Signal {
        match &mut self.source {
            Source::Process(streams) => {
                let waits = streams.iter_mut().map(|(sig, stream)| {
                    let sig = *sig;
                    Box::pin(async move {
                        stream.recv().await;
                        sig
                    })
                });
                futures::future::select_all(waits).await.0
            }
            Source::Channel(receiver) => match receiver.recv().await {
                Some(sig) => sig,
                None => std::future::pending().await,
            },
        }
    }
}

/// Whether `sig` asks the program to stop.
pub fn is_stop(sig: Signal) -> bool {
    STOP.contains(&sig)
}
