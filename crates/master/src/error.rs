//! The master's error type.

/// Everything a [`Master`](crate::Master) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected (e.g. an empty prefix).
    #[error(transparent)]
    Invalid(muster_core::Error),

    /// The master has stopped (shut down, or its task ended).
    #[error("the master has stopped; start a new one")]
    Stopped,
}
