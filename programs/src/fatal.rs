//! How a program ends on an error: one line on stderr, a non-zero exit status.

use std::fmt;
use std::process::ExitCode;

/// Exit status for bad input that the command line parser did not catch (invalid metadata
/// file, name or prefix): the same as clap's usage errors.
pub const USAGE: u8 = 2;

/// Exit status for everything else that stops a program (etcd unreachable, duplicate
/// name, port in use, ...).
pub const FAILURE: u8 = 1;

/// Exit status of `muster-worker` when an operator evicted its member (`muster-master
/// evict`): the process stopped announcing itself (a sidecar stopped its command first) and
/// must not simply be restarted into the group by a supervisor that treats 1 as "retry".
pub const EVICTED: u8 = 3;

/// An error that ends the program: a message for a person and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// One line saying what went wrong and, where possible, what to do.
    pub message: String,
    /// The process's exit status.
    pub code: u8,
}

impl Fatal {
    /// A runtime failure (exit status 1).
    pub fn failure(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: FAILURE,
        }
    }

    /// The member was evicted (exit status 3).
    pub fn evicted(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: EVICTED,
        }
    }

    /// Bad input (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal {
            message: message.into(),
            code: USAGE,
        }
    }

    /// Prints `{program}: error: {message}` on stderr (on one line: newlines in the message
    /// are replaced) and returns the exit status.
    pub fn report(&self, program: &str) -> ExitCode {
        let line = self.message.replace('\n', " ");
        eprintln!("{program}: error: {line}");
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}
