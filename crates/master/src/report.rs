//! Bad input in the log, rate-limited: every bad key and undecodable value the state machine
//! reports is counted (in [`Health`](crate::Health)), but a flood of them must not become a
//! flood of log lines (3,000 bad writes used to give 3,000 warnings).
//!
//! The rule: the first [`LOG_BURST`] reports of a window of [`LOG_WINDOW`] are logged one by
//! one, each with its key, revision and reason; the rest of the window are only counted, and
//! when the window is over one summary line says how many were not logged ("and 2990 more
//! bad keys or undecodable values in the last 10 s"). A window opens at the first report
//! after the previous one closed, so a trickle of bad writes is logged in full and a burst
//! costs at most `LOG_BURST + 1` lines per window. The summary is written when the window
//! ends (the master's watch loop keeps a timer for it), at the next step the master publishes
//! after that, or when the master stops, whichever comes first.

use std::time::Duration;

use muster_core::{BadKey, Skipped};
use tokio::time::Instant;

/// How many reports a window logs one by one.
pub(crate) const LOG_BURST: u64 = 10;

/// How long a window lasts.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The rate limiter of the bad-input warnings of one master (or one operator listing).
#[derive(Debug, Default)]
pub(crate) struct BadInputLog {
    /// When the current window opened (`None`: no window is open).
    opened: Option<Instant>,
    /// Reports logged one by one in the current window.
    logged: u64,
    /// Reports of the current window not logged one by one.
    suppressed: u64,
}

impl BadInputLog {
    /// Logs (or counts) an undecodable value.
    pub(crate) fn skipped(&mut self, now: Instant, skip: &Skipped) {
        if self.admit(now) {
            tracing::warn!(key = %skip.key, revision = skip.revision, reason = %skip.reason, "skipping undecodable value");
        }
    }

    /// Logs (or counts) a bad key. The key is written escaped (`{:?}`): it may hold control
    /// characters, and a log line must not carry them to a terminal.
    pub(crate) fn bad_key(&mut self, now: Instant, bad: &BadKey) {
        if self.admit(now) {
            tracing::warn!(key = ?bad.key, revision = bad.revision, reason = %bad.reason, "ignoring a bad key under the group's prefix");
        }
    }

    /// When the open window ends with reports to summarise, if it does.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.opened
            .filter(|_| self.suppressed > 0)
            .map(|opened| opened + LOG_WINDOW)
    }

    /// Closes the window if it is over at `now`, writing its summary.
    pub(crate) fn tick(&mut self, now: Instant) {
        if let Some(opened) = self.opened {
            if now >= opened + LOG_WINDOW {
                self.flush(now);
            }
        }
    }

    /// Closes the window now, writing its summary if any report was not logged.
    pub(crate) fn flush(&mut self, now: Instant) {
        if let Some(opened) = self.opened.take() {
            if self.suppressed > 0 {
                let secs = (now - opened).as_secs_f64().ceil().max(1.0) as u64;
                tracing::warn!(
                    suppressed = self.suppressed,
                    "and {} more bad keys or undecodable values in the last {secs} s, not \
                     logged one by one (counted in the master's health and metrics)",
                    self.suppressed
                );
            }
        }
        self.logged = 0;
        self.suppressed = 0;
    }

    /// Whether the next report is logged: opens a window if none is open.
    fn admit(&mut self, now: Instant) -> bool {
        self.tick(now);
        self.opened.get_or_insert(now);
        if self.logged < LOG_BURST {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_up_to_the_limit_then_summarised_once_the_window_ends() {
        let mut log = BadInputLog::default();
        let start = Instant::now();
        let bad = BadKey {
            key: "/g/x".into(),
            revision: 2,
            reason: muster_core::BadKeyReason::UnknownKind,
        };
        for _ in 0..25 {
            log.bad_key(start, &bad);
        }
        assert_eq!((log.logged, log.suppressed), (LOG_BURST, 25 - LOG_BURST));
        assert_eq!(log.due(), Some(start + LOG_WINDOW));
        log.tick(start + LOG_WINDOW - Duration::from_millis(1));
        assert_eq!(log.suppressed, 25 - LOG_BURST, "the window is not over yet");
        log.tick(start + LOG_WINDOW);
        assert_eq!((log.opened, log.logged, log.suppressed), (None, 0, 0));
        assert_eq!(log.due(), None);
        // A new window: logged again.
        log.bad_key(start + LOG_WINDOW * 3, &bad);
        assert_eq!((log.logged, log.suppressed), (1, 0));
        assert_eq!(log.due(), None, "nothing to summarise");
    }
}
