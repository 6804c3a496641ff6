//! `PollClock`: when `poll` was last called, read by a heartbeat task that leaves the group once `max.poll.interval.ms` has passed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The time of the last `poll`, as milliseconds since the clock was made: an atomic, so
/// `poll` stamps it without a lock and the heartbeat task reads it without one.
#[derive(Debug)]
pub(crate) struct PollClock {
    start: Instant,
    last_poll_ms: AtomicU64,
}

impl PollClock {
    /// A clock whose last poll is now.
    pub(crate) fn new() -> Self {
        PollClock {
            start: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
        }
    }

    /// `poll` was called now.
    pub(crate) fn note_poll(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_poll_ms.store(ms, Ordering::Relaxed);
    }

    /// When the member must leave unless `poll` is called before: `max_poll_interval` after
    /// the last poll.
    pub(crate) fn deadline(&self, max_poll_interval: Duration) -> Instant {
        self.start
            + Duration::from_millis(self.last_poll_ms.load(Ordering::Relaxed))
            + max_poll_interval
    }

    /// Whether that deadline has passed.
    pub(crate) fn expired(&self, max_poll_interval: Duration) -> bool {
        Instant::now() >= self.deadline(max_poll_interval)
    }
}
