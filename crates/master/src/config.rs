//! How a master behaves: prefix, reaping, retries, stall checks, subscriber buffers.
//!
//! How long one store call may take is the store's to say (its request timeout), not the
//! master's: the store's own error, worded by the backend, is what reaches
//! [`Health::last_error`](crate::Health::last_error).

use std::time::Duration;

/// Master settings. Start from [`MasterConfig::new`] and adjust.
///
/// ```
/// use std::time::Duration;
/// let config = muster_master::MasterConfig::new("/muster/web/").reap_after(Some(Duration::from_secs(30)));
/// assert_eq!(config.reap_after, Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The group's key prefix.
    pub prefix: String,
    /// How long a member may stay `Suspect` before this master reaps it (`Failed`);
    /// `None` never reaps (another master, or an operator, may).
    pub reap_after: Option<Duration>,
    /// How soon to propose a reap again when the last attempt did not show up.
    pub reap_retry: Duration,
    /// The first retry delay after a failure (doubles, with jitter, up to `retry_max`).
    pub retry_initial: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// Seed for retry jitter (simulations pin it; the default varies per master).
    pub seed: u64,
    /// When the store turns out to have been replaced by an empty one (etcd restored
    /// without its data: a new cluster id, or revisions gone backwards), how long to wait
    /// for workers to re-register before listing again. Should exceed the workers'
    /// keep-alive interval (TTL/3) plus a retry, so healthy workers are back by then.
    pub store_replaced_grace: Duration,
    /// How long the watch may stay quiet before the master asks the store where it is. If
    /// the store does not answer, the master reports itself unhealthy and reconnects; if the
    /// store is ahead of everything the watch delivered, the watch is re-opened (a watch
    /// stuck on an etcd member cut off from its cluster delivers nothing and says nothing).
    pub stall_check: Duration,
    /// How many events a subscriber may fall behind before it gets
    /// [`Event::Lagged`](crate::Event::Lagged) instead of the events it missed. Events are
    /// stored once for all subscribers, so this bounds the master's memory, not each one's.
    pub subscriber_buffer: usize,
}

impl MasterConfig {
    /// Defaults: reap after 60 s, retry a reap after 1 s, retries from 100 ms up to 5 s, 10 s of grace after a store replacement, a stall check after 10 s of
    /// a quiet watch, subscribers may fall 16,384 events behind.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            reap_after: Some(Duration::from_secs(60)),
            reap_retry: Duration::from_secs(1),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            seed: std::process::id() as u64,
            store_replaced_grace: Duration::from_secs(10),
            stall_check: Duration::from_secs(10),
            subscriber_buffer: 16_384,
        }
    }

    /// Sets the reap delay (`None`: never reap).
    pub fn reap_after(mut self, reap_after: Option<Duration>) -> Self {
        self.reap_after = reap_after;
        self
    }

    /// Sets the grace period after a store replacement.
    pub fn store_replaced_grace(mut self, grace: Duration) -> Self {
        self.store_replaced_grace = grace;
        self
    }

    /// Sets how long the watch may stay quiet before the store is asked where it is.
    pub fn stall_check(mut self, quiet: Duration) -> Self {
        self.stall_check = quiet;
        self
    }

    /// Sets how many events a subscriber may fall behind before it lags.
    pub fn subscriber_buffer(mut self, events: usize) -> Self {
        self.subscriber_buffer = events;
        self
    }

    /// Sets the jitter seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}
