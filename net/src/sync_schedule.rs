//! When a log's next sync is due: at once for a write an answer waits for, within a
//! bounded delay for one nothing urgent waits for.
//!
//! A KV server's phase-2 commit record and the coordinator's `Finished` record are
//! written after the client has its answer. Synced at once, each cost a sync of its own
//! (an fdatasync is tens of microseconds of CPU on this kind of machine) and held the
//! next write's prepare behind it, since one sync runs at a time. Deferred, they ride
//! with the next urgent sync, and a quiet log syncs them after [`DEFERRED_SYNC_MS`].

use ringkv_core::storage::SyncUrgency;

/// The longest a deferrable write waits for a sync: it bounds how long a key stays busy
/// after its update was answered (its next update waits for the acknowledgements).
pub(crate) const DEFERRED_SYNC_MS: u64 = 1;

/// What the writes not yet handed to a sync ask for.
#[derive(Debug, Default)]
pub(crate) struct SyncSchedule {
    /// A write an answer waits for is not yet handed to a sync.
    urgent: bool,
    /// Since when the oldest deferrable write not yet handed to a sync waits.
    deferred_since_ms: Option<u64>,
}

impl SyncSchedule {
    /// Notes a write of `urgency` appended at `now_ms`.
    pub(crate) fn wrote(&mut self, now_ms: u64, urgency: SyncUrgency) {
        match urgency {
            SyncUrgency::Now => self.urgent = true,
            SyncUrgency::Deferrable => {
                self.deferred_since_ms.get_or_insert(now_ms);
            }
        }
    }

    /// Whether a sync should start now (if none is under way).
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        self.urgent || self.deadline_ms().is_some_and(|at| at <= now_ms)
    }

    /// When the deferred writes become due, for the loop's wait; `None` when nothing
    /// waits or an urgent write makes the sync due already.
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        if self.urgent {
            return None;
        }
        self.deferred_since_ms
            .map(|since| since.saturating_add(DEFERRED_SYNC_MS))
    }

    /// Every write so far was handed to a sync (or is durable already).
    pub(crate) fn handed(&mut self) {
        self.urgent = false;
        self.deferred_since_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_urgent_write_is_due_at_once_and_a_deferrable_one_after_the_delay() {
        let mut schedule = SyncSchedule::default();
        assert!(!schedule.due(0));
        assert_eq!(schedule.deadline_ms(), None);
        schedule.wrote(10, SyncUrgency::Deferrable);
        schedule.wrote(10 + DEFERRED_SYNC_MS, SyncUrgency::Deferrable);
        assert!(!schedule.due(10 + DEFERRED_SYNC_MS - 1));
        assert_eq!(schedule.deadline_ms(), Some(10 + DEFERRED_SYNC_MS));
        assert!(
            schedule.due(10 + DEFERRED_SYNC_MS),
            "the oldest write sets the deadline"
        );
        schedule.wrote(10, SyncUrgency::Now);
        assert!(schedule.due(10));
        assert_eq!(schedule.deadline_ms(), None);
        schedule.handed();
        assert!(!schedule.due(u64::MAX));
        assert_eq!(schedule.deadline_ms(), None);
    }
}
