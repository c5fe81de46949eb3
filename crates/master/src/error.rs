//! The master's error type.

/// Everything a [`Master`](crate::Master) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration was rejected (e.g. an empty prefix).
    #[error(transparent)]
    Invalid(muster_core::Error),

    /// The master's task has ended (it was shut down, or it panicked): the view will not
    /// change any more.
    #[error("the master has stopped; start a new one")]
    Stopped,

    /// A subscriber fell behind and `missed` events were dropped for it.
    #[error(
        "this subscriber fell {missed} events behind and missed them; subscribe again for a \
         fresh snapshot (or raise MasterConfig::subscriber_buffer)"
    )]
    Lagged {
        /// How many events were dropped for this subscriber.
        missed: u64,
    },
}
