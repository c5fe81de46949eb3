//! muster-mem-backend (placeholder)
