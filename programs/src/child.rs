//! The command a sidecar runs: started in its own process group, signalled as a group,
//! waited for, and its exit status turned into ours.
//!
//! The command gets its own process group so that every signal reaches it exactly once,
//! through muster-worker (a terminal's ctrl-c would otherwise reach it twice: directly and
//! forwarded), and so that a forwarded signal also reaches the processes it started, e.g.
//! the server behind `sh -c`.

use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::fatal::Fatal;

/// A running command.
#[derive(Debug)]
pub struct Child {
    /// The process.
    process: tokio::process::Child,
    /// Its process id, which is also its process group id.
    pid: Pid,
    /// How it is shown in messages.
    display: String,
}

impl Child {
    /// Starts `command` (program and arguments) with our stdin, stdout and stderr. A program
    /// that cannot be run gives the shell's statuses: 127 when not found, 126 otherwise.
    pub fn spawn(command: &[String]) -> Result<Child, Fatal> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| Fatal::usage("no command given after --"))?;
        let shown = command.join(" ");
        let process = Command::new(program)
            .args(args)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let code = if e.kind() == ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                Fatal {
                    message: format!("cannot run {program:?}: {e}"),
                    code,
                }
            })?;
        let pid = process
            .id()
            .map(|id| Pid::from_raw(id as i32))
            .ok_or_else(|| Fatal::failure(format!("{shown:?} exited at once")))?;
        tracing::info!(pid = pid.as_raw(), command = %shown, "started the command");
        Ok(Child {
            process,
            pid,
            display: shown,
        })
    }

    /// The command line, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Sends `sig` to the command's process group. A group that is gone is not an error.
    pub fn signal(&self, sig: Signal) {
        tracing::info!(signal = %sig, pid = self.pid.as_raw(), "forwarding signal to the command");
        if let Err(e) = killpg(self.pid, sig) {
            tracing::debug!(signal = %sig, error = %e, "could not signal the command");
        }
    }

    /// Waits for the command to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        match self.process.wait().await {
            Ok(status) => status,
            Err(e) => {
                // Only possible if someone else reaped it; report it as a failure.
                tracing::error!(error = %e, "cannot wait for the command");
                ExitStatus::from_raw(1 << 8)
            }
        }
    }

    /// Asks the command to stop (SIGTERM to its group), waits up to `grace`, then kills the
    /// group (SIGKILL) and waits for it.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

/// Checks that `program` can be run (an executable file, found on `PATH` when it has no
/// `/`), so that a typo is reported before anything is registered. Statuses as the shell's:
/// 127 when not found, 126 when not executable.
pub fn check_program(program: &str) -> Result<(), Fatal> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = std::path::Path::new(program);
        return match std::fs::metadata(path) {
            Err(e) => Err(Fatal {
                message: format!("cannot run {program:?}: {e}"),
                code: 127,
            }),
            Ok(_) if !executable(path) => Err(Fatal {
                message: format!("cannot run {program:?}: not an executable file"),
                code: 126,
            }),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(Fatal {
            message: format!("cannot run {program:?}: command not found on PATH"),
            code: 127,
        })
    }
}

/// Our exit status for the command's: its exit code, or 128 + the signal that killed it (as
/// shells report it).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        (None, None) => 1,
    }
}

/// Waits until a TCP connection to `addr` succeeds, retrying every 50 ms to 1 s. Logs a
/// warning every 30 s of waiting.
pub async fn wait_until_listening(addr: &str) {
    let mut pause = Duration::from_millis(50);
    let started = tokio::time::Instant::now();
    let mut warned = Duration::ZERO;
    loop {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {
                tracing::info!(addr, "the command accepts connections");
                return;
            }
            Ok(Err(e)) => tracing::debug!(addr, error = %e, "not listening yet"),
            Err(_) => tracing::debug!(addr, "connect timed out"),
        }
        let waited = started.elapsed();
        if waited >= warned + Duration::from_secs(30) {
            warned = waited;
            tracing::warn!(addr, waited = ?waited, "still waiting for the command to accept connections before registering (--wait-ready)");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        // Killed by SIGTERM (15).
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        // Killed by SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
