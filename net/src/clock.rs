//! The core's time: milliseconds since the loop started, from a monotonic clock.

use std::time::{Duration, Instant};

/// Turns `Instant`s into the core's `Ts`: the core asserts that time never goes back,
/// which a monotonic clock guarantees and the wall clock does not.
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Milliseconds since the loop started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long to sleep from `now_ms` until `deadline_ms`. Both are whole milliseconds
    /// truncated from the same clock, so the loop never wakes in the millisecond before
    /// the deadline and finds the core's timer not yet due.
    pub(crate) fn wait_until(now_ms: u64, deadline_ms: u64) -> Duration {
        Duration::from_millis(deadline_ms.saturating_sub(now_ms))
    }
}
