//! muster-master (placeholder)
