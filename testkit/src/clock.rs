//! A runtime on tokio's paused clock, for the simulated runs (the demo's in-memory story, the
//! bench's simulation): time moves only when every task waits, so minutes of TTLs and reaps
//! pass in milliseconds, the same way on every run.
//!
//! tokio's paused clock is a testing feature (`test-util`); the kit is the one crate that
//! turns it on, so the programs that tell a simulated story get it from here rather than
//! naming a testing feature themselves.

/// A single-threaded runtime with time enabled and paused from the start.
pub fn paused_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}
