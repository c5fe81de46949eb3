//! Logs: `tracing` to stderr, filtered by `RUST_LOG`, warnings and errors only by default.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` if set (e.g. `RUST_LOG=info` or
/// `RUST_LOG=muster_worker=debug`), otherwise `warn`. Logs go to stderr so that stdout stays
/// clean for tables and JSON.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // A second call (tests run several programs' code in one process) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
