//! The shared backend conformance suite (`muster_core::testing`) on a fresh memory store,
//! under tokio's paused clock: lease expiries take no real time and land at exact instants.

use muster_core::testing::{run_all, Settings};
use muster_mem_backend::MemStore;

#[tokio::test(start_paused = true)]
async fn conformance() {
    run_all(&MemStore::new(), &Settings::default()).await;
}
