//! When a log that is rewritten whole (the coordinator's, an eventual-mode node's) is
//! compacted: past a threshold, and past twice what the last rewrite left, so that a
//! state larger than the threshold is not rewritten at every turn and the cost of
//! rewriting stays proportional to what was appended since.

/// The trigger of one log's compactions.
#[derive(Clone, Debug)]
pub(crate) struct Compaction {
    threshold_bytes: u64,
    last_bytes: u64,
}

impl Compaction {
    /// Compactions of a log once it holds `threshold_bytes`.
    pub(crate) fn new(threshold_bytes: u64) -> Self {
        Self {
            threshold_bytes,
            last_bytes: 0,
        }
    }

    /// Whether a log of `len_bytes` is due.
    pub(crate) fn is_due(&self, len_bytes: u64) -> bool {
        len_bytes >= self.threshold_bytes && len_bytes >= self.last_bytes.saturating_mul(2)
    }

    /// A compaction left `len_bytes` (or failed on a log of `len_bytes`, which is then
    /// tried again once it doubles).
    pub(crate) fn done(&mut self, len_bytes: u64) {
        self.last_bytes = len_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_waits_for_the_threshold_and_for_the_log_to_double() {
        let mut compaction = Compaction::new(1000);
        assert!(!compaction.is_due(999));
        assert!(compaction.is_due(1000));
        compaction.done(800);
        assert!(
            !compaction.is_due(1500),
            "a large state is not rewritten at once"
        );
        assert!(compaction.is_due(1600));
    }
}
