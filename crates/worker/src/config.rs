//! How a worker behaves: TTL (1 s to 1 hour, [`WorkerConfig::validate`]), keep-alive cadence,
//! renewal and registration deadlines, duplicate-name policy.

use std::time::Duration;

use muster_core::Incarnation;

use crate::error::Error;

/// What to do when another live process already holds the member's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDuplicate {
    /// Fail registration with [`Error::DuplicateName`](crate::Error::DuplicateName).
    #[default]
    Fail,
    /// Wait (retrying with backoff) until the other process's liveness key is gone, e.g.
    /// after a crash-restart within one TTL, then register.
    Wait,
}

/// Worker settings. Start from [`WorkerConfig::new`] and adjust.
///
/// ```
/// use std::time::Duration;
/// let config = muster_worker::WorkerConfig::new("/muster/web/").ttl(Duration::from_secs(5));
/// assert_eq!(config.keep_alive_interval(), Duration::from_secs(5) / 3);
/// ```
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The group's key prefix.
    pub prefix: String,
    /// The lease TTL: how long after the last keep-alive the member turns `Suspect`. From
    /// [`MIN_TTL`](Self::MIN_TTL) (1 s) to [`MAX_TTL`](Self::MAX_TTL) (1 hour).
    pub ttl: Duration,
    /// How often to renew the lease; `None` means TTL/3.
    pub keep_alive_every: Option<Duration>,
    /// The first retry delay after a failure (doubles, with jitter, up to TTL/3).
    pub retry_initial: Duration,
    /// How long `register` keeps retrying an unreachable store before giving up.
    pub register_timeout: Duration,
    /// What to do when the name is held by another live process.
    pub on_duplicate: OnDuplicate,
    /// This process's incarnation; `None` picks a fresh random one.
    pub incarnation: Option<Incarnation>,
}

impl WorkerConfig {
    /// The shortest lease TTL a worker accepts: 1 s. (etcd raises anything below its own
    /// minimum, 2 s with default settings, to that minimum.)
    pub const MIN_TTL: Duration = Duration::from_secs(1);

    /// The longest lease TTL a worker accepts: 1 hour.
    ///
    /// The TTL is how long a crashed or cut-off member still counts as alive in every view:
    /// clients keep being sent to a dead member for up to one TTL. Membership exists to
    /// notice that within seconds; past an hour a crash goes unnoticed longer than anyone
    /// would wait for it, and a typo (`100000h`, an 11-year lease, for `100000ms`) is the
    /// likelier cause. etcd's own limit (9,000,000,000 s) is no guide.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);

    /// Defaults: TTL 10 s, keep-alive every TTL/3, register timeout 30 s, fail on duplicate
    /// names, a fresh incarnation.
    ///
    /// How long one store call may take is the store's to say (etcd: `EtcdConfig`'s
    /// `connect_timeout` + `request_timeout`; memory: `MemStore::with_request_timeout`),
    /// except a renewal, whose deadline the worker passes ([`renew_timeout`](Self::renew_timeout)).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ttl: Duration::from_secs(10),
            keep_alive_every: None,
            retry_initial: Duration::from_millis(100),
            register_timeout: Duration::from_secs(30),
            on_duplicate: OnDuplicate::Fail,
            incarnation: None,
        }
    }

    /// Sets the TTL (checked by [`validate`](Self::validate): 1 s to 1 hour).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the duplicate-name policy.
    pub fn on_duplicate(mut self, policy: OnDuplicate) -> Self {
        self.on_duplicate = policy;
        self
    }

    /// Sets the incarnation (normally left random; simulations pin it for determinism).
    pub fn incarnation(mut self, incarnation: Incarnation) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Sets how long `register` retries an unreachable store.
    pub fn register_timeout(mut self, timeout: Duration) -> Self {
        self.register_timeout = timeout;
        self
    }

    /// Checks the settings before anything is written: the TTL must be within
    /// [`MIN_TTL`](Self::MIN_TTL)..=[`MAX_TTL`](Self::MAX_TTL) (1 s to 1 hour).
    /// [`Worker::register`](crate::Worker::register) calls it and fails with
    /// [`Error::InvalidTtl`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use muster_worker::WorkerConfig;
    /// assert!(WorkerConfig::new("/g/").validate().is_ok()); // 10 s
    /// assert!(WorkerConfig::new("/g/").ttl(Duration::from_secs(3600)).validate().is_ok());
    /// assert!(WorkerConfig::new("/g/").ttl(Duration::from_secs(3601)).validate().is_err());
    /// assert!(WorkerConfig::new("/g/").ttl(Duration::from_millis(500)).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let reason = if self.ttl < Self::MIN_TTL {
            "it is too short: use at least 1s (etcd raises anything below its minimum, 2s by default, to that minimum)"
        } else if self.ttl > Self::MAX_TTL {
            "it is too long: use at most 1h (a crashed member stays alive in every view for up to one TTL)"
        } else {
            return Ok(());
        };
        Err(Error::InvalidTtl {
            ttl: self.ttl,
            reason,
        })
    }

    /// The effective keep-alive interval.
    pub fn keep_alive_interval(&self) -> Duration {
        self.keep_alive_every.unwrap_or(self.ttl / 3)
    }

    /// The longest a lease renewal may take before it counts as failed (the worker reports
    /// `Reconnecting` and retries): half the TTL, for every TTL. The worker passes it to
    /// [`Store::keep_alive`](muster_core::Store::keep_alive), so the store waits exactly that
    /// long (no other timeout cuts it short).
    ///
    /// A renewal that answers late but well before the lease runs out is not a failure: etcd
    /// queues renewals behind a burst of writes (thousands of workers registering at once),
    /// and giving up on one only sends it again into the same queue. Half the TTL still
    /// leaves a retry time before the lease expires. (etcd's Go client likewise waits for a
    /// renewal's answer until the lease's deadline rather than a request timeout.)
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = muster_worker::WorkerConfig::new("/muster/web/");
    /// assert_eq!(config.renew_timeout(), Duration::from_secs(5)); // TTL 10 s
    /// let long = config.ttl(Duration::from_secs(60));
    /// assert_eq!(long.renew_timeout(), Duration::from_secs(30));
    /// ```
    pub fn renew_timeout(&self) -> Duration {
        self.ttl / 2
    }

    /// The longest retry delay: retries stay frequent enough to renew within one TTL.
    pub(crate) fn retry_max(&self) -> Duration {
        self.keep_alive_interval().max(self.retry_initial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_bounded_on_both_sides_and_the_message_says_what_to_use() {
        let config = |ttl| WorkerConfig::new("/g/").ttl(ttl);
        for ok in [
            WorkerConfig::MIN_TTL,
            Duration::from_secs(10),
            WorkerConfig::MAX_TTL,
        ] {
            assert!(config(ok).validate().is_ok(), "{ok:?}");
        }
        for (bad, needle) in [
            (Duration::ZERO, "too short: use at least 1s"),
            (Duration::from_millis(999), "too short: use at least 1s"),
            (
                WorkerConfig::MAX_TTL + Duration::from_millis(1),
                "too long: use at most 1h",
            ),
            (
                Duration::from_secs(100_000 * 3600),
                "too long: use at most 1h",
            ),
        ] {
            let err = config(bad).validate().unwrap_err();
            assert!(
                matches!(err, Error::InvalidTtl { ttl, .. } if ttl == bad),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.starts_with("invalid lease TTL"), "{text}");
            assert!(text.contains(needle), "{text}");
        }
    }
}
