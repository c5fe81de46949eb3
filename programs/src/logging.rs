//! Logs: `tracing` to stderr, filtered by `RUST_LOG`, warnings and errors only by default;
//! coloured only on a terminal, and never when `NO_COLOR` is set.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` if set (e.g. `RUST_LOG=info` or
/// `RUST_LOG=muster_worker=debug`), otherwise `warn`. Logs go to stderr so that stdout stays
/// clean for tables and JSON; ANSI colours only when stderr is a terminal and `NO_COLOR` is
/// unset or empty ([`colour`]), so a log file or a pipe gets plain text.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // A second call (tests run several programs' code in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Whether logs are coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
///
/// ```
/// use muster_programs::logging::colour;
/// assert!(colour(true, None));
/// assert!(colour(true, Some("".as_ref())));
/// assert!(!colour(true, Some("1".as_ref())));
/// assert!(!colour(false, None));
/// ```
pub fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && !matches!(no_color, Some(value) if !value.is_empty())
}
