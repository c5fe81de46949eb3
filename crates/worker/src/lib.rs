//! muster-worker (placeholder)
