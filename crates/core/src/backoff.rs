//! Capped exponential backoff with jitter, for every retry loop in muster.
//!
//! Pure: the caller sleeps. Jitter comes from a small seeded generator so that a simulation
//! replays the same delays for the same seed.

use std::time::Duration;

/// Capped exponential backoff with "equal jitter": each delay is drawn from
/// `[d/2, d]` where `d` doubles from `initial` up to `max`.
///
/// ```
/// use std::time::Duration;
/// let mut b = muster_core::Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
/// let first = b.next_delay();
/// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
/// for _ in 0..10 { assert!(b.next_delay() <= Duration::from_secs(1)); }
/// b.reset();
/// assert!(b.next_delay() <= Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay's ceiling.
    initial: Duration,
    /// The largest delay ever returned.
    max: Duration,
    /// The current ceiling.
    current: Duration,
    /// How many delays were handed out since the last reset (observable: no hidden loops).
    attempts: u32,
    /// xorshift64* state for jitter; never zero.
    rng: u64,
}

impl Backoff {
    /// A backoff from `initial` doubling to `max`, jittered by a generator seeded with `seed`.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            current: initial,
            attempts: 0,
            rng: seed | 1,
        }
    }

    /// The next delay to sleep before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            self.random() % (span + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// How many delays were handed out since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Starts again from `initial` (call after a success).
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_in_the_jitter_window() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(80), 1);
        let ceilings = [10, 20, 40, 80, 80, 80];
        for ceiling in ceilings {
            let d = b.next_delay();
            let c = Duration::from_millis(ceiling);
            assert!(d >= c / 2 && d <= c, "{d:?} not in [{:?}, {c:?}]", c / 2);
        }
        assert_eq!(b.attempts(), 6);
    }

    #[test]
    fn same_seed_same_delays() {
        let mk = || Backoff::new(Duration::from_millis(10), Duration::from_secs(5), 42);
        let (mut a, mut b) = (mk(), mk());
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
